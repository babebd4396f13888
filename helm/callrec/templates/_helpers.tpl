{{/*
Naming and labels.
*/}}
{{- define "callrec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "callrec.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "callrec.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "callrec.labels" -}}
helm.sh/chart: {{ include "callrec.chart" . }}
{{ include "callrec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: callrec
{{- end }}

{{- define "callrec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "callrec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component. Call with (dict "ctx" $ "component" "ingest"). */}}
{{- define "callrec.componentLabels" -}}
{{ include "callrec.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "callrec.componentSelector" -}}
{{ include "callrec.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "callrec.componentName" -}}
{{- printf "%s-%s" (include "callrec.fullname" .ctx | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "callrec.serviceAccountName" -}}
{{- $values := index .ctx.Values .component }}
{{- if .ctx.Values.serviceAccount.create }}
{{- default (include "callrec.componentName" .) $values.serviceAccount.name }}
{{- else }}
{{- default "default" $values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "callrec.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Image of one component: <component>.image overrides image (e.g. a model image). */}}
{{- define "callrec.componentImage" -}}
{{- $v := .ctx.Values }}
{{- $own := (index $v .component).image | default dict }}
{{- if or $own.repository $own.tag }}
{{- printf "%s:%s" (default $v.image.repository $own.repository) (default (default .ctx.Chart.AppVersion $v.image.tag) $own.tag) }}
{{- else }}
{{- include "callrec.image" .ctx }}
{{- end }}
{{- end }}

{{/*
A value as a ConfigMap string. Helm reads numbers in values as float64, so
33554432 would print as 3.3554432e+07; whole numbers are printed as integers.
*/}}
{{- define "callrec.envValue" -}}
{{- if kindIs "float64" . }}
{{- if eq . (floor .) }}{{ . | int64 | toString }}{{ else }}{{ . | toString }}{{ end }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}

{{/*
Settings the chart derives from its typed values, per component, as a YAML map of
CALLREC_* name -> value. Every name is a field of the service's settings class
(infra/settings.py); tests/deploy/test_helm.py checks that against SERVICES.
Call with (dict "ctx" $ "component" "recorder").
*/}}
{{- define "callrec.managedConfig" -}}
{{- $v := .ctx.Values }}
{{- $env := dict }}
{{- $_ := set $env "CALLREC_LOG_LEVEL" $v.logLevel }}
{{- if ne .component "console" }}
{{- $_ := set $env "CALLREC_KAFKA_BOOTSTRAP" $v.kafka.bootstrap }}
{{- $_ := set $env "CALLREC_KAFKA_MEDIA_TOPIC" $v.kafka.topics.media.name }}
{{- $_ := set $env "CALLREC_KAFKA_RECORDINGS_TOPIC" $v.kafka.topics.recordings.name }}
{{- $_ := set $env "CALLREC_KAFKA_SECURITY_PROTOCOL" $v.kafka.securityProtocol }}
{{- with $v.kafka.sasl.mechanism }}{{ $_ := set $env "CALLREC_KAFKA_SASL_MECHANISM" . }}{{ end }}
{{- with $v.kafka.sasl.username }}{{ $_ := set $env "CALLREC_KAFKA_SASL_USERNAME" . }}{{ end }}
{{- if $v.kafka.tls.caSecret }}
{{- $_ := set $env "CALLREC_KAFKA_SSL_CAFILE" (printf "/etc/callrec/kafka-ca/%s" $v.kafka.tls.caKey) }}
{{- end }}
{{- end }}
{{- if eq .component "ingest" }}
{{- $_ := set $env "CALLREC_INGEST_PORT" $v.ingest.port }}
{{- $_ := set $env "CALLREC_INGEST_DRAIN_GRACE_S" $v.ingest.drain.graceSeconds }}
{{- $_ := set $env "CALLREC_INGEST_ALLOW_ANONYMOUS" (ternary "true" "false" (eq (toString $v.ingest.auth.allowAnonymous) "true")) }}
{{- else if eq .component "control" }}
{{- $_ := set $env "CALLREC_KAFKA_CALLS_TOPIC" $v.kafka.topics.calls.name }}
{{- $_ := set $env "CALLREC_KAFKA_CONTROL_TOPIC" $v.kafka.topics.control.name }}
{{- $_ := set $env "CALLREC_ARCHIVE_URI" $v.s3.archiveUri }}
{{- $_ := set $env "CALLREC_S3_REGION" $v.s3.region }}
{{- with $v.s3.endpointUrl }}{{ $_ := set $env "CALLREC_S3_ENDPOINT_URL" . }}{{ end }}
{{- with $v.s3.sse }}{{ $_ := set $env "CALLREC_S3_SSE" . }}{{ end }}
{{- with $v.s3.sseKmsKeyId }}{{ $_ := set $env "CALLREC_S3_SSE_KMS_KEY_ID" . }}{{ end }}
{{- $_ := set $env "CALLREC_CONTROL_PORT" $v.control.port }}
{{- $_ := set $env "CALLREC_CONTROL_STREAM_URL" $v.control.streamUrl }}
{{- $_ := set $env "CALLREC_WAVIX_API_URL" $v.control.wavixApiUrl }}
{{- else }}
{{- $_ := set $env "CALLREC_ARCHIVE_URI" $v.s3.archiveUri }}
{{- $_ := set $env "CALLREC_S3_REGION" $v.s3.region }}
{{- with $v.s3.endpointUrl }}{{ $_ := set $env "CALLREC_S3_ENDPOINT_URL" . }}{{ end }}
{{- with $v.s3.sse }}{{ $_ := set $env "CALLREC_S3_SSE" . }}{{ end }}
{{- with $v.s3.sseKmsKeyId }}{{ $_ := set $env "CALLREC_S3_SSE_KMS_KEY_ID" . }}{{ end }}
{{- with $v.s3.objectLock.mode }}
{{- $_ := set $env "CALLREC_S3_OBJECT_LOCK_MODE" . }}
{{- $_ := set $env "CALLREC_S3_OBJECT_LOCK_DAYS" $v.s3.objectLock.days }}
{{- end }}
{{- $_ := set $env "CALLREC_S3_LEGAL_HOLD" $v.s3.objectLock.legalHold }}
{{- if eq .component "recorder" }}
{{- $_ := set $env "CALLREC_RECORDER_PORT" $v.recorder.port }}
{{- $_ := set $env "CALLREC_RECORDER_SPILL_DIR" $v.recorder.spill.mountPath }}
{{- else if eq .component "console" }}
{{- $_ := set $env "CALLREC_CONSOLE_PORT" $v.console.port }}
{{- $_ := set $env "CALLREC_CONSOLE_INDEX_DIR" "/var/lib/callrec/console-index" }}
{{- if include "callrec.hasConsoleAuth" .ctx }}
{{- $_ := set $env "CALLREC_CONSOLE_USERS_FILE" "/etc/callrec/console/users" }}
{{- end }}
{{- if $v.console.export.existingSecret }}
{{- $_ := set $env "CALLREC_CONSOLE_EXPORT_SIGNING_KEY_FILE" "/etc/callrec/export/signing.key" }}
{{- end }}
{{- else if eq .component "analyzer" }}
{{- $_ := set $env "CALLREC_ANALYZER_PORT" $v.analyzer.port }}
{{- $_ := set $env "CALLREC_ANALYZER_SHUTDOWN_GRACE_S" $v.analyzer.shutdown.graceSeconds }}
{{- $_ := set $env "CALLREC_ANALYZER_DEVICE" (ternary "cuda" "cpu" $v.analyzer.gpu.enabled) }}
{{- end }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/*
ConfigMap data of one component: the managed settings plus <component>.config (whose
names "callrec.validateSettings" has checked: none of them is managed or secret).
*/}}
{{- define "callrec.configData" -}}
{{- $managed := include "callrec.managedConfig" . | fromYaml }}
{{- $extra := (index .ctx.Values .component).config | default dict }}
{{- $data := merge (dict) $managed $extra }}
{{- range $key := keys $data | sortAlpha }}
{{ $key }}: {{ include "callrec.envValue" (get $data $key) | quote }}
{{- end }}
{{- end }}

{{/* Secret references. */}}
{{- define "callrec.secretName" -}}
{{- printf "%s-secrets" (include "callrec.fullname" .) }}
{{- end }}

{{- define "callrec.ingestTokensSecret" -}}
{{- if .Values.ingest.auth.existingSecret }}{{ .Values.ingest.auth.existingSecret }}{{ else }}{{ include "callrec.secretName" . }}{{ end }}
{{- end }}

{{- define "callrec.s3Secret" -}}
{{- if .Values.s3.credentials.existingSecret }}{{ .Values.s3.credentials.existingSecret }}{{ else }}{{ include "callrec.secretName" . }}{{ end }}
{{- end }}

{{- define "callrec.kafkaSaslSecret" -}}
{{- if .Values.kafka.sasl.existingSecret }}{{ .Values.kafka.sasl.existingSecret }}{{ else }}{{ include "callrec.secretName" . }}{{ end }}
{{- end }}

{{- define "callrec.hasIngestTokens" -}}
{{- if or .Values.ingest.auth.existingSecret .Values.ingest.auth.tokens }}true{{ end }}
{{- end }}

{{- define "callrec.hasS3Credentials" -}}
{{- if or .Values.s3.credentials.existingSecret .Values.s3.credentials.accessKeyId }}true{{ end }}
{{- end }}

{{- define "callrec.controlSecret" -}}
{{- if .Values.control.auth.existingSecret }}{{ .Values.control.auth.existingSecret }}{{ else }}{{ include "callrec.secretName" . }}{{ end }}
{{- end }}

{{/* Which control secrets exist (from existingSecret: all of them). */}}
{{- define "callrec.hasControlSecret" -}}
{{- $a := .ctx.Values.control.auth }}
{{- if and .ctx.Values.control.enabled (or $a.existingSecret (index $a .field)) }}true{{ end }}
{{- end }}

{{- define "callrec.consoleSecret" -}}
{{- if .Values.console.auth.existingSecret }}{{ .Values.console.auth.existingSecret }}{{ else }}{{ include "callrec.secretName" . }}{{ end }}
{{- end }}

{{/* The console's users file and session key: from console.auth.existingSecret, or given
inline (console.auth.users, console.auth.sessionSecret) into the chart's Secret. */}}
{{- define "callrec.hasConsoleAuth" -}}
{{- if or .Values.console.auth.existingSecret (and .Values.console.auth.users .Values.console.auth.sessionSecret) }}true{{ end }}
{{- end }}

{{/* The console may read with its own, narrower S3 credentials (docs/console.md). */}}
{{- define "callrec.consoleS3Secret" -}}
{{- if .Values.console.s3Credentials.existingSecret }}{{ .Values.console.s3Credentials.existingSecret }}{{ else }}{{ include "callrec.s3Secret" . }}{{ end }}
{{- end }}

{{- define "callrec.hasKafkaPassword" -}}
{{- if or .Values.kafka.sasl.existingSecret .Values.kafka.sasl.password }}true{{ end }}
{{- end }}

{{/* Environment entries from Secrets (never from the ConfigMap). */}}
{{- define "callrec.secretEnv" -}}
{{- $v := .ctx.Values }}
{{- if and (ne .component "console") (include "callrec.hasKafkaPassword" .ctx) }}
- name: CALLREC_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "callrec.kafkaSaslSecret" .ctx }}
      key: {{ $v.kafka.sasl.passwordKey }}
{{- end }}
{{- if and (eq .component "ingest") (include "callrec.hasIngestTokens" .ctx) }}
- name: CALLREC_INGEST_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ include "callrec.ingestTokensSecret" .ctx }}
      key: {{ $v.ingest.auth.tokensKey }}
{{- end }}
{{- if or (eq .component "ingest") (eq .component "control") }}
{{- $a := $v.control.auth }}
{{- range $field := list "streamTokenKeys" "webhookSecret" "apiToken" "wavixApiKey" }}
{{- $name := get (dict "streamTokenKeys" "CALLREC_STREAM_TOKEN_KEYS" "webhookSecret" "CALLREC_CONTROL_WEBHOOK_SECRET" "apiToken" "CALLREC_CONTROL_API_TOKEN" "wavixApiKey" "CALLREC_WAVIX_API_KEY") $field }}
{{- if and (or (eq $.component "control") (eq $field "streamTokenKeys")) (include "callrec.hasControlSecret" (dict "ctx" $.ctx "field" $field)) }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "callrec.controlSecret" $.ctx }}
      key: {{ index $a (printf "%sKey" $field) }}
{{- end }}
{{- end }}
{{- end }}
{{- $s3Secret := ternary (include "callrec.consoleS3Secret" .ctx) (include "callrec.s3Secret" .ctx) (eq .component "console") }}
{{- if and (ne .component "ingest") (or (include "callrec.hasS3Credentials" .ctx) (and (eq .component "console") $v.console.s3Credentials.existingSecret)) }}
- name: CALLREC_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $s3Secret }}
      key: {{ $v.s3.credentials.accessKeyIdKey }}
- name: CALLREC_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3Secret }}
      key: {{ $v.s3.credentials.secretAccessKeyKey }}
{{- end }}
{{- if and (eq .component "console") (include "callrec.hasConsoleAuth" .ctx) }}
- name: CALLREC_CONSOLE_SESSION_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "callrec.consoleSecret" .ctx }}
      key: {{ $v.console.auth.sessionSecretKey }}
{{- end }}
{{- end }}

{{/* Security contexts: non-root, read-only root filesystem, no capabilities. */}}
{{- define "callrec.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "callrec.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* Pod-level settings shared by the three Deployments. */}}
{{- define "callrec.podScheduling" -}}
{{- $values := .values | default (index .ctx.Values .component) }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "callrec.componentSelector" . | nindent 8 }}
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "callrec.componentSelector" . | nindent 8 }}
{{- end }}
{{- end }}

{{/* Volumes every pod has: a writable /tmp (the root filesystem is read-only). */}}
{{- define "callrec.commonVolumes" -}}
- name: tmp
  emptyDir:
    {{- /* The analyzer downloads the WAV it analyses to /tmp (read in windows, RAM flat). */}}
    {{- /* The console builds evidence exports there (and, by default, its calls index). */}}
    {{- $own := "" }}
    {{- if has (toString .component) (list "analyzer" "console") }}
    {{- $own = (index .ctx.Values (toString .component)).tmpSizeLimit }}
    {{- end }}
    sizeLimit: {{ $own | default .ctx.Values.tmpSizeLimit }}
{{- if .ctx.Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .ctx.Values.kafka.tls.caSecret }}
    items:
      - key: {{ .ctx.Values.kafka.tls.caKey }}
        path: {{ .ctx.Values.kafka.tls.caKey }}
{{- end }}
{{- end }}

{{- define "callrec.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .ctx.Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/callrec/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* Pod annotations: restart on config change; optional prometheus.io scrape hints. */}}
{{- define "callrec.podAnnotations" -}}
{{- $values := index .ctx.Values .component }}
checksum/config: {{ include "callrec.configData" . | sha256sum }}
checksum/secret: {{ include "callrec.secretData" .ctx | sha256sum }}
{{- if .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $values.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with $values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Data of the chart-managed Secret (only values given inline). */}}
{{- define "callrec.secretData" -}}
{{- $v := .Values }}
{{- if and $v.ingest.auth.tokens (not $v.ingest.auth.existingSecret) }}
{{ $v.ingest.auth.tokensKey }}: {{ join "," $v.ingest.auth.tokens | b64enc | quote }}
{{- end }}
{{- if and $v.s3.credentials.accessKeyId (not $v.s3.credentials.existingSecret) }}
{{ $v.s3.credentials.accessKeyIdKey }}: {{ $v.s3.credentials.accessKeyId | b64enc | quote }}
{{ $v.s3.credentials.secretAccessKeyKey }}: {{ required "s3.credentials.secretAccessKey is required with s3.credentials.accessKeyId" $v.s3.credentials.secretAccessKey | b64enc | quote }}
{{- end }}
{{- if and $v.kafka.sasl.password (not $v.kafka.sasl.existingSecret) }}
{{ $v.kafka.sasl.passwordKey }}: {{ $v.kafka.sasl.password | b64enc | quote }}
{{- end }}
{{- if and $v.control.enabled (not $v.control.auth.existingSecret) }}
{{- $a := $v.control.auth }}
{{- range $field := list "apiToken" "streamTokenKeys" "wavixApiKey" "webhookSecret" }}
{{- with index $a $field }}
{{ index $a (printf "%sKey" $field) }}: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.console.auth.users $v.console.auth.sessionSecret (not $v.console.auth.existingSecret) }}
{{ $v.console.auth.usersKey }}: {{ printf "%s\n" (join "\n" $v.console.auth.users) | b64enc | quote }}
{{ $v.console.auth.sessionSecretKey }}: {{ $v.console.auth.sessionSecret | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
<component>.config and the CALLREC_* entries of <component>.extraEnv may name only the
component's `config` settings in files/settings.yaml: not a typo (the services ignore
unknown names), not a setting the chart derives from typed values (one setting, one
source: the drain grace must stay inside terminationGracePeriodSeconds), not a secret.
*/}}
{{- define "callrec.validateSettings" -}}
{{- $settings := .Files.Get "files/settings.yaml" | fromYaml }}
{{- range $component := list "ingest" "recorder" "analyzer" "control" "console" }}
{{- $v := index $.Values $component }}
{{- $known := index $settings $component }}
{{- $config := $v.config | default dict }}
{{- range $name := keys $config | sortAlpha }}
{{- include "callrec.checkSetting" (dict "known" $known "component" $component "name" $name "where" (printf "%s.config" $component)) }}
{{- end }}
{{- $seen := dict }}
{{- range $i, $env := $v.extraEnv | default list }}
{{- $name := toString $env.name }}
{{- $where := printf "%s.extraEnv[%d]" $component $i }}
{{- if hasKey $seen $name }}
{{- fail (printf "%s: %s is already set by %s.extraEnv[%d]" $where $name $component (get $seen $name)) }}
{{- end }}
{{- $_ := set $seen $name $i }}
{{- if hasPrefix "CALLREC_" $name }}
{{- include "callrec.checkSetting" (dict "known" $known "component" $component "name" $name "where" $where) }}
{{- if hasKey $config $name }}
{{- fail (printf "%s: %s is also in %s.config; set it in one place" $where $name $component) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "callrec.checkSetting" -}}
{{- $known := .known }}
{{- if hasKey $known.secrets .name }}
{{- fail (printf "%s: %s is a secret: the chart passes it only from a Secret (%s), never from values or a ConfigMap" .where .name (get $known.secrets .name)) }}
{{- else if hasKey $known.managed .name }}
{{- fail (printf "%s: %s is set by the chart (from %s) and cannot be set here" .where .name (get $known.managed .name)) }}
{{- else if not (has .name $known.config) }}
{{- fail (printf "%s: %s is not a setting of `callrec %s` (docs/configuration.md); it takes %s" .where .name .component (join ", " $known.config)) }}
{{- end }}
{{- end }}

{{/* Render-time checks of the values that Kubernetes cannot check. */}}
{{- define "callrec.validate" -}}
{{- include "callrec.validateSettings" . }}
{{- $v := .Values }}
{{- $media := $v.kafka.topics.media }}
{{- $recs := $v.kafka.topics.recordings }}
{{- if gt (int $v.recorder.replicaCount) (int $media.partitions) }}
{{- fail (printf "recorder.replicaCount (%d) > kafka.topics.media.partitions (%d): recorders beyond the partition count would sit idle (one partition is consumed by one recorder)" (int $v.recorder.replicaCount) (int $media.partitions)) }}
{{- end }}
{{- if and $v.analyzer.enabled (gt (int $v.analyzer.replicaCount) (int $recs.partitions)) }}
{{- fail (printf "analyzer.replicaCount (%d) > kafka.topics.recordings.partitions (%d)" (int $v.analyzer.replicaCount) (int $recs.partitions)) }}
{{- end }}
{{- $needed := add (int $v.kafka.topics.maxCallHours) (int $v.kafka.topics.recoveryWindowHours) }}
{{- if lt (int $media.retentionHours) $needed }}
{{- fail (printf "kafka.topics.media.retentionHours (%d) must cover the longest call plus the recovery window (maxCallHours + recoveryWindowHours = %d): a recorder replays an open call from its first record" (int $media.retentionHours) $needed) }}
{{- end }}
{{- if lt (int $recs.retentionHours) (int $v.kafka.topics.recoveryWindowHours) }}
{{- fail (printf "kafka.topics.recordings.retentionHours (%d) must cover kafka.topics.recoveryWindowHours (%d)" (int $recs.retentionHours) (int $v.kafka.topics.recoveryWindowHours)) }}
{{- end }}
{{- /* The topic Job writes these from the typed values checked above; a topic's config
       must not override them (retention.bytes: size-based deletion can drop audio a
       recorder has not archived yet, whatever the time-based retention says). */}}
{{- range $topic := list "media" "recordings" }}
{{- $managed := dict "retention.ms" (printf "from kafka.topics.%s.retentionHours, which the chart checks against the longest call and the recovery window" $topic) "min.insync.replicas" "from kafka.topics.minInsyncReplicas" "cleanup.policy" "always delete: compaction would drop records" }}
{{- $config := (index $v.kafka.topics $topic).config | default dict }}
{{- range $key := keys $config | sortAlpha }}
{{- if hasKey $managed $key }}
{{- fail (printf "kafka.topics.%s.config.%s is set by the chart (%s); remove it" $topic $key (get $managed $key)) }}
{{- end }}
{{- if eq $key "retention.bytes" }}
{{- fail (printf "kafka.topics.%s.config.retention.bytes: size-based retention deletes records a recorder or analyzer may still need, whatever retentionHours says; set retentionHours (docs/operations.md, Kafka retention)" $topic) }}
{{- end }}
{{- end }}
{{- end }}
{{- if gt (int $v.kafka.topics.minInsyncReplicas) (int $v.kafka.topics.replicationFactor) }}
{{- fail (printf "kafka.topics.minInsyncReplicas (%d) > kafka.topics.replicationFactor (%d): no acks=all write could ever succeed" (int $v.kafka.topics.minInsyncReplicas) (int $v.kafka.topics.replicationFactor)) }}
{{- end }}
{{- $hpa := $v.ingest.autoscaling }}
{{- if and $hpa.enabled (gt (int $hpa.minReplicas) (int $hpa.maxReplicas)) }}
{{- fail (printf "ingest.autoscaling.minReplicas (%d) > ingest.autoscaling.maxReplicas (%d)" (int $hpa.minReplicas) (int $hpa.maxReplicas)) }}
{{- end }}
{{- if and $v.kafka.sasl.mechanism (not (include "callrec.hasKafkaPassword" .)) }}
{{- fail "kafka.sasl.mechanism is set: give kafka.sasl.existingSecret (or kafka.sasl.password)" }}
{{- end }}
{{- if and $v.kafka.topics.create $v.kafka.sasl.mechanism (not $v.kafka.sasl.existingSecret) }}
{{- fail "the topic Job runs before install/upgrade, before this release's own Secret exists: with SASL use kafka.sasl.existingSecret, or set kafka.topics.create=false" }}
{{- end }}
{{- if and $v.s3.objectLock.mode (lt (int $v.s3.objectLock.days) 1) }}
{{- fail "s3.objectLock.mode is set: s3.objectLock.days must be at least 1" }}
{{- end }}
{{- end }}
