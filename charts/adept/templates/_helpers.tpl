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

{{/* The three images `make image` builds (images/Containerfile*), tagged with the chart's appVersion. */}}
{{- define "adept.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "adept.cudaImage" -}}
{{- printf "%s:%s" .Values.cudaImage.repository (default (printf "%s-cuda" .Chart.AppVersion) .Values.cudaImage.tag) }}
{{- end }}

{{- define "adept.operatorImage" -}}
{{- printf "%s:%s" .Values.operatorImage.repository (default .Chart.AppVersion .Values.operatorImage.tag) }}
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
{{- /* Nothing that serves or trains reaches the hub: weights come from the cache the weights Job fills. */}}
- name: HF_HUB_OFFLINE
  value: "1"
- name: TRANSFORMERS_OFFLINE
  value: "1"
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

{{/* Read-only keys of the training data store (training.dataStore): training workers only. */}}
{{- define "adept.trainingDataEnv" -}}
{{- with .Values.training.dataStore }}
{{- if .uri }}
- name: ADEPT_TRAINING_DATA_URI
  value: {{ .uri | quote }}
{{- if .endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ .endpointUrl | quote }}
{{- end }}
{{- if .region }}
- name: AWS_DEFAULT_REGION
  value: {{ .region | quote }}
{{- end }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ required "training.dataStore.uri needs training.dataStore.existingSecret (read-only keys)" .existingSecret }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
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

{{/*
Refuse a KubeRay whose RayCluster CRD lacks authOptions.secretName (< 1.6.0): it would drop the field and run the
cluster with a token of its own, which nobody holds. Checked where Helm can read the cluster (`lookup`: install,
upgrade); `helm template` sees no cluster. The operator checks again at start-up (operators/kuberay.py).
*/}}
{{- define "adept.checkKubeRay" -}}
{{- $crd := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "rayclusters.ray.io" }}
{{- if $crd }}
{{- range (dig "spec" "versions" (list) $crd) }}
{{- if and (eq .name "v1") (dig "schema" "openAPIV3Schema" "properties" "spec" "properties" "" .) }}
{{- if not (dig "schema" "openAPIV3Schema" "properties" "spec" "properties" "authOptions" "properties" "secretName" "" .) }}
{{- fail "the installed KubeRay's RayCluster CRD has no spec.authOptions.secretName: KubeRay >= 1.6.0 is required (the chart pins 1.7.0). Upgrade KubeRay and its CRDs, or install with kuberay-operator.enabled=true." }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The training RayCluster's shape (adept.config.cluster_shape.ClusterShape) as JSON: what each group's nodes offer
Ray (num-cpus, else the CPU limit KubeRay turns into it; nvidia.com/gpu) and how many the autoscaler may run. The
gateway and the operator get it as `training_shape`: jobs default to the GPU group and are refused when they can
never fit (adept/placement.py).
*/}}
{{- define "adept.trainingShape" -}}
{{- $t := .Values.training }}
{{- $head := dict "name" "head" "cpus" (toString (default $t.head.resources.limits.cpu (index $t.head.rayStartParams "num-cpus"))) "min_replicas" 1 "max_replicas" 1 }}
{{- $groups := list }}
{{- range $g := list (list "cpu" $t.cpuWorkers) (list "gpu" $t.gpuWorkers) }}
{{- $kind := index $g 0 }}
{{- $spec := index $g 1 }}
{{- if $spec.enabled }}
{{- $cpus := toString (default $spec.resources.limits.cpu (index $spec.rayStartParams "num-cpus")) }}
{{- $gpus := 0 }}
{{- if eq $kind "gpu" }}{{ $gpus = int $spec.gpusPerWorker }}{{ end }}
{{- $groups = append $groups (dict "name" (printf "%s-workers" $kind) "cpus" $cpus "gpus" $gpus "min_replicas" (int $spec.minReplicas) "max_replicas" (int $spec.maxReplicas)) }}
{{- end }}
{{- end }}
{{- dict "head" $head "groups" $groups | toJson }}
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

{{/* Model references the pods load (model.name, model.embedding), without duplicates. */}}
{{- define "adept.modelRefs" -}}
{{- uniq (list .Values.model.name .Values.model.embedding) | toJson }}
{{- end }}

{{/* The refs that name hub repositories (not `bundled:`, not a path): the only ones ever downloaded. */}}
{{- define "adept.hubRefs" -}}
{{- $out := list }}
{{- range (include "adept.modelRefs" . | fromJsonArray) }}
{{- if not (or (hasPrefix "bundled:" .) (hasPrefix "/" .)) }}{{ $out = append $out . }}{{ end }}
{{- end }}
{{- $out | toJson }}
{{- end }}

{{/* The weights Job runs when a shared cache (pvc) has hub models to fetch and downloading is on. */}}
{{- define "adept.weightsJobEnabled" -}}
{{- if and .Values.modelCache.download.enabled (eq .Values.modelCache.type "pvc") (include "adept.hubRefs" . | fromJsonArray) }}true{{ end }}
{{- end }}

{{/* Environment of whatever downloads from the hub: the cache, the endpoint and the token (nobody else gets it). */}}
{{- define "adept.downloadEnv" -}}
- name: HF_HOME
  value: {{ printf "%s/hf" .Values.modelCache.mountPath | quote }}
- name: ADEPT_DATA_DIR
  value: /tmp/adept
- name: HF_HUB_DISABLE_TELEMETRY
  value: "1"
{{- with .Values.modelCache.download.endpoint }}
- name: HF_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.modelCache.download.tokenSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.modelCache.download.tokenKey }}
{{- end }}
{{- end }}

{{/* The weights Job's spec; its hash names the Job, so a new model, revision or image makes a new Job. */}}
{{- define "adept.weightsJobSpec" -}}
backoffLimit: {{ .Values.modelCache.download.backoffLimit }}
template:
  metadata:
    labels:
      {{- include "adept.selectorLabels" . | nindent 6 }}
      app.kubernetes.io/component: weights
  spec:
    restartPolicy: Never
    # It downloads weights; it never calls the Kubernetes API.
    automountServiceAccountToken: false
    {{- with .Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml .Values.podSecurityContext | nindent 6 }}
    containers:
      - name: download
        image: {{ include "adept.image" . }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        command: {{ concat (list "adept" "models" "pull" "--download") (include "adept.hubRefs" . | fromJsonArray) | toJson }}
        env:
          {{- include "adept.downloadEnv" . | nindent 10 }}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: ["ALL"]
        resources:
          {{- toYaml .Values.modelCache.download.resources | nindent 10 }}
        volumeMounts:
          - name: models
            mountPath: {{ .Values.modelCache.mountPath }}
          - name: tmp
            mountPath: /tmp
    volumes:
      - name: models
        persistentVolumeClaim:
          claimName: {{ include "adept.modelsClaimName" . }}
      - name: tmp
        emptyDir: {}
{{- end }}

{{- define "adept.weightsJobName" -}}
{{- printf "%s-weights-%s" (include "adept.fullname" .) (include "adept.weightsJobSpec" . | sha256sum | trunc 8) }}
{{- end }}

{{/*
The init container of every Ray pod: the replicas start only once their models are in the cache. With a
shared cache it waits for the weights Job (or a pre-filled claim); with a per-pod emptyDir it downloads.
Args: dict root, image.
*/}}
{{- define "adept.weightsInitContainer" -}}
{{- $root := .root }}
{{- $hub := include "adept.hubRefs" $root | fromJsonArray }}
{{- $download := and (gt (len $hub) 0) $root.Values.modelCache.download.enabled (eq $root.Values.modelCache.type "emptyDir") }}
{{- if and $hub (eq $root.Values.modelCache.type "emptyDir") (not $root.Values.modelCache.download.enabled) }}
{{- fail "modelCache.type=emptyDir with modelCache.download.enabled=false can hold only bundled models or paths: use a pvc (existingClaim) for pre-filled hub models" }}
{{- end }}
- name: {{ ternary "fetch-weights" "wait-for-weights" $download }}
  image: {{ .image }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  {{- if $download }}
  command: {{ concat (list "adept" "models" "pull" "--download") $hub | toJson }}
  env:
    {{- include "adept.downloadEnv" $root | nindent 4 }}
  {{- else }}
  {{- $hint := list }}
  {{- if include "adept.weightsJobEnabled" $root }}
  {{- $job := include "adept.weightsJobName" $root }}
  {{- $hint = list "--hint" (printf "the Job %s fills the cache: kubectl -n %s logs job/%s" $job $root.Release.Namespace $job) }}
  {{- else if $hub }}
  {{- $hint = list "--hint" "modelCache.download.enabled=false: the model cache must be filled beforehand" }}
  {{- end }}
  command: {{ concat (list "adept" "models" "wait") (include "adept.modelRefs" $root | fromJsonArray) $hint | toJson }}
  env:
    - name: HF_HOME
      value: {{ printf "%s/hf" $root.Values.modelCache.mountPath | quote }}
    - name: HF_HUB_OFFLINE
      value: "1"
    - name: ADEPT_DATA_DIR
      value: /tmp/adept
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.rayContainerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml $root.Values.modelCache.download.resources | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ $root.Values.modelCache.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end }}

{{/*
Ray resources of a group (KubeRay's group-level `resources`, which it turns into `ray start --resources`
and the autoscaler reads): the group's own custom resources from rayStartParams.resources, plus
`adept_cpu_replicas` where CPU-only Serve replicas may run. Args: dict spec, cpuReplicas (bool).
*/}}
{{- define "adept.rayGroupResources" -}}
{{- $res := dict }}
{{- with .spec.rayStartParams.resources }}
{{- range $k, $v := fromJson (trimAll "'\"` " (toString .) | replace "\\\"" "\"") }}
{{- $_ := set $res $k (toString $v) }}
{{- end }}
{{- end }}
{{- if .cpuReplicas }}
{{- $_ := set $res "adept_cpu_replicas" "1000" }}
{{- end }}
{{- if $res }}
resources:
  {{- range $k, $v := $res }}
  {{ $k | quote }}: {{ $v | quote }}
  {{- end }}
{{- end }}
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
{{- $image := default (include (ternary "adept.cudaImage" "adept.image" (eq .group "gpu")) $root) $spec.image -}}
metadata:
  labels:
    {{- include "adept.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    adept.io/ray-group: {{ .group }}
spec:
  {{- if and $serving (ne .group "gpu") }}
  # The gateway (CPU-only: on the head or CPU workers; its tenant store watches Tenants) and, on the head,
  # KubeRay's autoscaler use this token. GPU workers host no CPU-only replica, so no gateway: no token.
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
  initContainers:
    {{- if gt $gpus 0 }}
    # First: the node's NVIDIA driver must run the image's CUDA build (torch 2.13: CUDA 13, driver >= 580); an
    # older one would fail deep in the first CUDA call. Its message is the pod's status (kubectl describe pod).
    - name: check-gpu-driver
      image: {{ $image }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: ["python", "-m", "adept.gpu_driver"]
      terminationMessagePolicy: FallbackToLogsOnError
      securityContext:
        {{- toYaml $root.Values.rayContainerSecurityContext | nindent 8 }}
      resources:
        requests: {cpu: 100m, memory: 512Mi}
        limits: {cpu: "1", memory: 2Gi}
    {{- end }}
    {{- include "adept.weightsInitContainer" (dict "root" $root "image" $image) | nindent 4 }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" (eq .group "head") }}
      image: {{ $image }}
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
        {{- if ne .group "head" }}
        {{- include "adept.trainingDataEnv" $root | nindent 8 }}
        {{- end }}
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
        - name: shared-mem
          mountPath: /dev/shm
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
    # Ray's object store lives in /dev/shm; the runtime's default is 64 MiB. Memory-backed, capped at the
    # container's memory limit (what KubeRay would add itself, made explicit here).
    - name: shared-mem
      emptyDir:
        medium: Memory
        {{- with (($spec.resources).limits).memory }}
        sizeLimit: {{ . }}
        {{- end }}
{{- end }}

{{/* A Ray worker group. Args: dict root, component, group (cpu|gpu), spec. */}}
{{- define "adept.rayWorkerGroup" -}}
{{- $cpuReplicas := and (eq .component "serving") (eq .group "cpu") }}
- groupName: {{ .group }}-workers
  replicas: {{ .spec.replicas }}
  minReplicas: {{ .spec.minReplicas }}
  maxReplicas: {{ .spec.maxReplicas }}
  {{- include "adept.rayGroupResources" (dict "spec" .spec "cpuReplicas" $cpuReplicas) | nindent 2 }}
  rayStartParams:
    metrics-export-port: {{ .root.Values.metrics.port | quote }}
    {{- range $k, $v := omit .spec.rayStartParams "resources" }}
    {{ $k }}: {{ $v | quote }}
    {{- end }}
  template:
    {{- include "adept.rayPodTemplate" . | nindent 4 }}
{{- end }}

{{/* Head group. Args: dict root, component, spec. */}}
{{- define "adept.rayHeadGroup" -}}
{{- $ctx := merge (dict "group" "head") . }}
{{- /* A serving head that offers CPUs (a one-node try-out) hosts CPU-only replicas too. */}}
{{- $cpuReplicas := and (eq .component "serving") (ne (toString (index .spec.rayStartParams "num-cpus" | default "")) "0") }}
{{- include "adept.rayGroupResources" (dict "spec" .spec "cpuReplicas" $cpuReplicas) }}
rayStartParams:
  metrics-export-port: {{ .root.Values.metrics.port | quote }}
  {{- range $k, $v := omit .spec.rayStartParams "resources" }}
  {{ $k }}: {{ $v | quote }}
  {{- end }}
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

{{/*
Cloud metadata endpoints no egress rule may reach (tests/charts/test_networkpolicy.py lists them):
  IPv4: 169.254.0.0/16 (link-local: AWS, GCP, Azure, OCI, DigitalOcean 169.254.169.254), 100.100.100.200 (Alibaba),
        168.63.129.16 (Azure WireServer), 192.0.0.192 (OCI classic);
  IPv6: fe80::/10 (link-local), fd00:ec2::/32 (AWS: metadata fd00:ec2::254, DNS, time), fd20:ce::254 (Google Cloud),
        ::ffff:0:0/96 (IPv4-mapped: no such packet belongs on the wire).
*/}}
{{- define "adept.exceptV4" -}}["169.254.0.0/16", "100.100.100.200/32", "168.63.129.16/32", "192.0.0.192/32"]{{- end }}
{{- define "adept.exceptV6" -}}["fe80::/10", "fd00:ec2::/32", "fd20:ce::254/128", "::ffff:0:0/96"]{{- end }}

{{/* An egress rule to addresses outside the cluster: the given CIDRs, or anywhere but the metadata endpoints above
     (a given 0.0.0.0/0 or ::/0 gets the same exceptions). Arg: {cidrs, ports}. */}}
{{- define "adept.externalEgress" -}}
- to:
    {{- range (default (list "0.0.0.0/0" "::/0") .cidrs) }}
    {{- if eq . "0.0.0.0/0" }}
    - ipBlock: {cidr: 0.0.0.0/0, except: {{ include "adept.exceptV4" $ }}}
    {{- else if eq . "::/0" }}
    - ipBlock: {cidr: "::/0", except: {{ include "adept.exceptV6" $ }}}
    {{- else }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
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
