{{/* Names, labels and the pieces shared by the Ray pod templates. */}}

{{- define "adept.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource-name prefix; kept short because KubeRay appends suffixes to RayService/RayCluster names. */}}
{{- define "adept.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "adept.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "adept.selectorLabels" -}}
app.kubernetes.io/name: {{ include "adept.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "adept.labels" -}}
helm.sh/chart: {{ include "adept.chart" . }}
{{ include "adept.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "adept.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "adept.adminSecretName" -}}
{{- default (printf "%s-admin" (include "adept.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "adept.dataClaimName" -}}
{{- default (printf "%s-data" (include "adept.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{- define "adept.modelsClaimName" -}}
{{- default (printf "%s-models" (include "adept.fullname" .)) .Values.modelCache.existingClaim }}
{{- end }}

{{- define "adept.serveServiceName" -}}
{{- printf "%s-serve-svc" (include "adept.fullname" .) }}
{{- end }}

{{- define "adept.trainingName" -}}
{{- printf "%s-training" (include "adept.fullname" .) }}
{{- end }}

{{- define "adept.jobServiceName" -}}
{{- printf "%s-jobs" (include "adept.fullname" .) }}
{{- end }}

{{/* Milvus address: the bundled chart's service (named like its fullname helper), else externalMilvus.uri. */}}
{{- define "adept.milvusUri" -}}
{{- if .Values.milvus.enabled }}
{{- $svc := ternary .Release.Name (printf "%s-milvus" .Release.Name) (contains "milvus" .Release.Name) | trunc 63 | trimSuffix "-" }}
{{- printf "http://%s:19530" $svc }}
{{- else }}
{{- required "milvus.enabled=false needs externalMilvus.uri (the Milvus you bring)" .Values.externalMilvus.uri }}
{{- end }}
{{- end }}

{{- define "adept.adapterStoreUri" -}}
{{- if eq .Values.adapterStore.type "s3" }}
{{- required "adapterStore.type=s3 needs adapterStore.s3.uri" .Values.adapterStore.s3.uri }}
{{- else }}
{{- printf "%s/adapters" .Values.persistence.mountPath }}
{{- end }}
{{- end }}

{{/* Environment shared by every Adept container (Ray pods and the operator). */}}
{{- define "adept.env" -}}
- name: ADEPT_DATA_DIR
  value: {{ .Values.persistence.mountPath | quote }}
- name: HF_HOME
  value: {{ printf "%s/hf" .Values.modelCache.mountPath | quote }}
{{- if .Values.modelCache.offline }}
- name: HF_HUB_OFFLINE
  value: "1"
- name: TRANSFORMERS_OFFLINE
  value: "1"
{{- end }}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: ADEPT_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "adept.adminSecretName" . }}
      key: {{ .Values.auth.secretKey }}
{{- if and (not .Values.milvus.enabled) .Values.externalMilvus.existingSecret }}
{{- range list "ADEPT_MILVUS_TOKEN" "ADEPT_PLATFORM__MILVUS_TOKEN" }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.externalMilvus.existingSecret }}
      key: {{ $.Values.externalMilvus.tokenKey }}
{{- end }}
{{- end }}
{{- if eq .Values.adapterStore.type "s3" }}
{{- with .Values.adapterStore.s3 }}
{{- if .endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ .endpointUrl | quote }}
{{- end }}
{{- if .region }}
- name: AWS_DEFAULT_REGION
  value: {{ .region | quote }}
{{- end }}
{{- if .existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "adept.volumes" -}}
- name: data
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "adept.dataClaimName" . }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: models
{{- if eq .Values.modelCache.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ include "adept.modelsClaimName" . }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.modelCache.sizeLimit }}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "adept.volumeMounts" -}}
- name: data
  mountPath: {{ .Values.persistence.mountPath }}
- name: models
  mountPath: {{ .Values.modelCache.mountPath }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
A Ray pod template. Args: dict with
  root (the chart context), component (serving|training), group (head|cpu|gpu),
  spec (the values block: resources, nodeSelector, tolerations, affinity, image?, gpusPerWorker?).
*/}}
{{- define "adept.rayPodTemplate" -}}
{{- $root := .root }}
{{- $spec := .spec }}
{{- $gpus := 0 }}
{{- if eq .group "gpu" }}{{- $gpus = int $spec.gpusPerWorker }}{{- end -}}
metadata:
  labels:
    {{- include "adept.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    adept.io/ray-group: {{ .group }}
spec:
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with $spec.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" (eq .group "head") }}
      image: {{ default (include "adept.image" $root) $spec.image }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      securityContext:
        {{- toYaml $root.Values.rayContainerSecurityContext | nindent 8 }}
      env:
        {{- include "adept.env" $root | nindent 8 }}
      ports:
        {{- if eq .group "head" }}
        - {name: gcs, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        {{- if eq .component "serving" }}
        - {name: serve, containerPort: 8000}
        {{- end }}
        - {name: metrics, containerPort: {{ $root.Values.metrics.port }}}
      resources:
        {{- $res := deepCopy $spec.resources }}
        {{- if gt $gpus 0 }}
        {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" $gpus) (default (dict) $res.limits)) }}
        {{- $_ := set $res "requests" (merge (dict "nvidia.com/gpu" $gpus) (default (dict) $res.requests)) }}
        {{- end }}
        {{- toYaml $res | nindent 8 }}
      volumeMounts:
        {{- include "adept.volumeMounts" $root | nindent 8 }}
      {{- if eq .group "head" }}
      lifecycle:
        preStop:
          exec:
            command: ["/bin/sh", "-c", "ray stop"]
      {{- end }}
  volumes:
    {{- include "adept.volumes" $root | nindent 4 }}
{{- end }}

{{/* A Ray worker group. Args: dict root, component, group (cpu|gpu), spec. */}}
{{- define "adept.rayWorkerGroup" -}}
- groupName: {{ .group }}-workers
  replicas: {{ .spec.replicas }}
  minReplicas: {{ .spec.minReplicas }}
  maxReplicas: {{ .spec.maxReplicas }}
  rayStartParams:
    metrics-export-port: {{ .root.Values.metrics.port | quote }}
    {{- range $k, $v := .spec.rayStartParams }}
    {{ $k }}: {{ $v | quote }}
    {{- end }}
  template:
    {{- include "adept.rayPodTemplate" . | nindent 4 }}
{{- end }}

{{/* Head group. Args: dict root, component, spec. */}}
{{- define "adept.rayHeadGroup" -}}
rayStartParams:
  metrics-export-port: {{ .root.Values.metrics.port | quote }}
  {{- range $k, $v := .spec.rayStartParams }}
  {{ $k }}: {{ $v | quote }}
  {{- end }}
template:
  {{- include "adept.rayPodTemplate" (merge (dict "group" "head") .) | nindent 2 }}
{{- end }}

{{/* In-tree autoscaler settings. Arg: the autoscaler values block plus root. */}}
{{- define "adept.autoscalerOptions" -}}
upscalingMode: {{ .spec.upscalingMode }}
idleTimeoutSeconds: {{ .spec.idleTimeoutSeconds }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
resources:
  {{- toYaml .spec.resources | nindent 2 }}
securityContext:
  {{- toYaml .root.Values.rayContainerSecurityContext | nindent 2 }}
{{- end }}
