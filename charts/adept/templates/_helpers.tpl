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
{{- printf "%s://%s:19530" (ternary "https" "http" (ne .Values.milvusTls.caSecret "")) $svc }}
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

{{/* Environment shared by every Adept container (Ray pods and the operator): settings only, no secrets. */}}
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
{{- end }}

{{/*
Secrets are given per use (docs/security.md), never to every pod:
  adept.s3Env        S3 keys: where adapters are read or written (serving pods, the operator's publisher)
  adept.milvusEnv    Milvus credentials: serving pods (retrieval) only
  adept.rayAuthEnv   a Ray cluster's token: that cluster's pods (Ray needs it in every process)
The admin key reaches no Ray pod: serving pods get its sha256 (ADEPT_ADMIN_KEY_SHA256), the operator the key.
*/}}
{{- define "adept.s3Env" -}}
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

{{- define "adept.milvusEnv" -}}
{{- if .Values.milvus.enabled }}
# The bundled Milvus runs with authorization on; its root password comes from the milvusAuth Secret.
- name: ADEPT_MILVUS_ROOT_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "adept.milvusSecretName" . }}
      key: {{ .Values.milvusAuth.passwordKey }}
- name: ADEPT_PLATFORM__MILVUS_TOKEN
  value: "root:$(ADEPT_MILVUS_ROOT_PASSWORD)"
{{- else if .Values.externalMilvus.existingSecret }}
- name: ADEPT_PLATFORM__MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalMilvus.existingSecret }}
      key: {{ .Values.externalMilvus.tokenKey }}
{{- end }}
{{- end }}

{{/* Token auth for a Ray cluster's containers. Arg: dict root, cluster (serving|training). KubeRay's authOptions
     injects the same two variables (>= 1.6); set here too, so Ray runs with token auth on any KubeRay version. */}}
{{- define "adept.rayAuthEnv" -}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "adept.rayTokenSecretName" . }}
      key: auth_token
{{- end }}

{{- define "adept.rayTokenSecretName" -}}
{{- $own := (index .root.Values.rayAuth .cluster).existingSecret }}
{{- default (printf "%s-ray-%s" (include "adept.fullname" .root) .cluster) $own }}
{{- end }}

{{- define "adept.milvusSecretName" -}}
{{- default (printf "%s-milvus-root" (include "adept.fullname" .)) .Values.milvusAuth.existingSecret }}
{{- end }}

{{- define "adept.servingServiceAccount" -}}
{{- printf "%s-serving" (include "adept.fullname" .) }}
{{- end }}

{{/* KubeRay authOptions of a Ray cluster. Arg: dict root, cluster. */}}
{{- define "adept.rayAuthOptions" -}}
authOptions:
  mode: token
  secretName: {{ include "adept.rayTokenSecretName" . }}
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

{{/* Training pods see of the data volume only their run storage (read-write), the shared inputs and the
     converted models (read-only): not the adapter registry, the tenant store or other state. */}}
{{- define "adept.trainingVolumeMounts" -}}
- name: data
  mountPath: {{ printf "%s/training" .Values.persistence.mountPath }}
  subPath: training
- name: data
  mountPath: {{ printf "%s/shared" .Values.persistence.mountPath }}
  subPath: shared
  readOnly: true
- name: data
  mountPath: {{ printf "%s/models" .Values.persistence.mountPath }}
  subPath: models
  readOnly: true
- name: models
  mountPath: {{ .Values.modelCache.mountPath }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "adept.milvusCaMount" -}}
{{- if .Values.milvusTls.caSecret }}
- name: milvus-ca
  mountPath: /etc/adept/milvus-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "adept.milvusCaVolume" -}}
{{- if .Values.milvusTls.caSecret }}
- name: milvus-ca
  secret:
    secretName: {{ .Values.milvusTls.caSecret }}
    items:
      - key: {{ .Values.milvusTls.caKey }}
        path: ca.crt
{{- end }}
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
{{- $serving := eq .component "serving" }}
metadata:
  labels:
    {{- include "adept.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    adept.io/ray-group: {{ .group }}
spec:
  {{- if and $serving (include "adept.hostsGateway" .) }}
  # The gateway (its tenant store watches Tenants) and, on the head, KubeRay's autoscaler use this token.
  serviceAccountName: {{ include "adept.servingServiceAccount" $root }}
  automountServiceAccountToken: true
  {{- else if ne .group "head" }}
  # Nothing in this pod calls the Kubernetes API (on training workers: tenants' fine-tunes).
  automountServiceAccountToken: false
  {{- end }}
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
        {{- include "adept.rayAuthEnv" (dict "root" $root "cluster" .component) | nindent 8 }}
        {{- if $serving }}
        - name: ADEPT_ADMIN_KEY_SHA256
          valueFrom:
            secretKeyRef:
              name: {{ include "adept.adminSecretName" $root }}
              key: {{ $root.Values.auth.hashKey }}
        {{- include "adept.s3Env" $root | nindent 8 }}
        {{- include "adept.milvusEnv" $root | nindent 8 }}
        {{- else }}
        # Training hands its result to the operator, which publishes it: no registry, tenant or admin credentials here.
        - name: ADEPT_TRAINING_PUBLISH
          value: handoff
        - name: ADEPT_MODEL
          value: {{ $root.Values.model.name | quote }}
        - name: ADEPT_EMBEDDING_MODEL
          value: {{ $root.Values.model.embedding | quote }}
        {{- end }}
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
        {{- if $serving }}
        {{- include "adept.volumeMounts" $root | nindent 8 }}
        {{- include "adept.milvusCaMount" $root | nindent 8 }}
        {{- else }}
        {{- include "adept.trainingVolumeMounts" $root | nindent 8 }}
        {{- end }}
      {{- if eq .group "head" }}
      lifecycle:
        preStop:
          exec:
            command: ["/bin/sh", "-c", "ray stop"]
      {{- end }}
  volumes:
    {{- include "adept.volumes" $root | nindent 4 }}
    {{- if $serving }}
    {{- include "adept.milvusCaVolume" $root | nindent 4 }}
    {{- end }}
{{- end }}

{{/* Does this serving group host gateway replicas? The head and the CPU workers do; the GPU workers only when
     there are no CPU workers. Only they get the gateway's ServiceAccount token (non-empty output = yes). */}}
{{- define "adept.hostsGateway" -}}
{{- if and (eq .component "serving") (or (ne .group "gpu") (not .root.Values.serving.cpuWorkers.enabled)) }}yes{{ end }}
{{- end }}

{{/* rayStartParams of a group: metrics port, the `adept_gateway` resource where gateway replicas may run, the user's. */}}
{{- define "adept.rayStartParams" -}}
metrics-export-port: {{ .root.Values.metrics.port | quote }}
{{- if and (include "adept.hostsGateway" .) (not (hasKey .spec.rayStartParams "resources")) }}
resources: {{ `"{\"adept_gateway\": 1000}"` | quote }}
{{- end }}
{{- range $k, $v := .spec.rayStartParams }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}

{{/* A Ray worker group. Args: dict root, component, group (cpu|gpu), spec. */}}
{{- define "adept.rayWorkerGroup" -}}
- groupName: {{ .group }}-workers
  replicas: {{ .spec.replicas }}
  minReplicas: {{ .spec.minReplicas }}
  maxReplicas: {{ .spec.maxReplicas }}
  rayStartParams:
    {{- include "adept.rayStartParams" . | nindent 4 }}
  template:
    {{- include "adept.rayPodTemplate" . | nindent 4 }}
{{- end }}

{{/* Head group. Args: dict root, component, spec. */}}
{{- define "adept.rayHeadGroup" -}}
{{- $ctx := merge (dict "group" "head") . }}
rayStartParams:
  {{- include "adept.rayStartParams" $ctx | nindent 2 }}
template:
  {{- include "adept.rayPodTemplate" $ctx | nindent 2 }}
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

{{/* An egress rule to addresses outside the cluster: the given CIDRs, or anywhere but link-local. Arg: {cidrs, ports}. */}}
{{- define "adept.externalEgress" -}}
- to:
    {{- if .cidrs }}
    {{- range .cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
    {{- else }}
    - ipBlock: {cidr: 0.0.0.0/0, except: [169.254.0.0/16]}
    - ipBlock: {cidr: "::/0", except: ["fe80::/10"]}
    {{- end }}
  ports:
    {{- range .ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end }}
{{/* Egress to the cluster DNS (and a node-local DNS cache's address, when given). Arg: networkPolicy.dns. */}}
{{- define "adept.dnsEgress" -}}
- to:
    {{- range .cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .namespace | quote }}
      podSelector:
        matchLabels:
          {{- toYaml .podLabels | nindent 10 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end }}
