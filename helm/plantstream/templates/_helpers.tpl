{{/* Names -------------------------------------------------------------------------------- */}}

{{- define "plantstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "plantstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "plantstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "plantstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: plantstream
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "flows"). */}}
{{- define "plantstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plantstream.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "plantstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Endpoints ---------------------------------------------------------------------------- */}}

{{- define "plantstream.kafkaBootstrap" -}}
{{- if .Values.kafka.inCluster.enabled -}}
{{- printf "%s:%v" .Values.kafka.inCluster.service .Values.kafka.inCluster.port -}}
{{- else -}}
{{- required "kafka.bootstrapServers: set the Kafka bootstrap servers (host:port,…) or kafka.inCluster.enabled=true" .Values.kafka.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{- define "plantstream.clickhouseUrl" -}}
{{- if .Values.clickhouse.inCluster.enabled -}}
{{- $c := .Values.clickhouse.inCluster -}}
{{- printf "%s://%s:%v" $c.scheme $c.service $c.port -}}
{{- else -}}
{{- required "clickhouse.url: set the ClickHouse URL (http(s)://host:port) or clickhouse.inCluster.enabled=true" .Values.clickhouse.url -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by every plantstream container: config, endpoints, secrets by reference. */}}
{{- define "plantstream.env" -}}
{{ include "plantstream.envBase" . }}
{{ include "plantstream.clickhouseWriterEnv" . }}
{{- end -}}

{{/* The shared environment without any ClickHouse account (the `helm test` pod adds the reader's). */}}
{{- define "plantstream.envBase" -}}
- name: PLANTSTREAM_CONFIG
  value: /etc/plantstream/plant.yaml
- name: PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS
  value: {{ include "plantstream.kafkaBootstrap" . | quote }}
- name: PLANTSTREAM__KAFKA__SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: PLANTSTREAM__KAFKA__PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: PLANTSTREAM__KAFKA__REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
{{- with .Values.kafka.saslMechanism }}
- name: PLANTSTREAM__KAFKA__SASL_MECHANISM
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kafka.saslUsername }}
- name: PLANTSTREAM__KAFKA__SASL_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if .Values.kafka.existingSecret }}
- name: PLANTSTREAM__KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.kafka.existingSecret | quote }}, key: {{ .Values.kafka.passwordKey | quote }}}
{{- end }}
- name: PLANTSTREAM__CLICKHOUSE__URL
  value: {{ include "plantstream.clickhouseUrl" . | quote }}
- name: PLANTSTREAM__CLICKHOUSE__DATABASE
  value: {{ .Values.clickhouse.database | quote }}
{{- if .Values.clickhouse.caSecret }}
- name: PLANTSTREAM__CLICKHOUSE__CA_CERT
  value: /etc/plantstream/clickhouse/ca.crt
{{- end }}
{{- if .Values.eventhubs.existingSecret }}
- name: PLANTSTREAM__EVENTHUBS__CONNECTION_STRING
  valueFrom:
    secretKeyRef: {name: {{ .Values.eventhubs.existingSecret | quote }}, key: {{ .Values.eventhubs.connectionStringKey | quote }}}
{{- with .Values.eventhubs.topic }}
- name: PLANTSTREAM__EVENTHUBS__TOPIC
  value: {{ . | quote }}
{{- end }}
{{- end }}
- name: HOME
  value: /tmp
- name: PYTHONUNBUFFERED
  value: "1"
{{- end -}}

{{/* The flows' ClickHouse account (the writer): user name and password from its Secret. */}}
{{- define "plantstream.clickhouseWriterEnv" -}}
- name: PLANTSTREAM__CLICKHOUSE__USERNAME
  value: {{ .Values.clickhouse.username | quote }}
{{- if .Values.clickhouse.existingSecret }}
- name: PLANTSTREAM__CLICKHOUSE__PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.clickhouse.existingSecret | quote }}, key: {{ .Values.clickhouse.passwordKey | quote }}}
{{- end }}
{{- end -}}

{{/* The read-only account (Grafana's `grafana` user): `helm test` and reading commands. */}}
{{- define "plantstream.clickhouseReaderEnv" -}}
- name: PLANTSTREAM__CLICKHOUSE__READER__USERNAME
  value: {{ .Values.grafana.username | quote }}
{{- if .Values.grafana.existingSecret }}
- name: PLANTSTREAM__CLICKHOUSE__READER__PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.grafana.existingSecret | quote }}, key: {{ .Values.grafana.passwordKey | quote }}}
{{- end }}
{{- end -}}

{{/* The migration's own account (DDL, users, grants), when one is set apart from the writer. */}}
{{- define "plantstream.clickhouseMigratorEnv" -}}
{{- with .Values.clickhouse.migrator }}
{{- if .username }}
- name: PLANTSTREAM__CLICKHOUSE__MIGRATOR__USERNAME
  value: {{ .username | quote }}
{{- if .existingSecret }}
- name: PLANTSTREAM__CLICKHOUSE__MIGRATOR__PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .passwordKey | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The alert webhook's URL and token (both secrets), for the flows only. */}}
{{- define "plantstream.webhookEnv" -}}
{{- with .Values.webhook }}
{{- if .existingSecret }}
- name: PLANTSTREAM__ALERTS__WEBHOOK__URL
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .urlKey | quote }}, optional: true}
- name: PLANTSTREAM__ALERTS__WEBHOOK__TOKEN
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .tokenKey | quote }}, optional: true}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes every plantstream pod mounts: the plant config, a writable /tmp, the ClickHouse CA. */}}
{{- define "plantstream.volumes" -}}
- name: plant-config
  configMap:
    name: {{ include "plantstream.fullname" . }}-plant
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- if .Values.clickhouse.caSecret }}
- name: clickhouse-ca
  secret:
    secretName: {{ .Values.clickhouse.caSecret | quote }}
{{- end }}
{{- end -}}

{{- define "plantstream.volumeMounts" -}}
- name: plant-config
  mountPath: /etc/plantstream/plant.yaml
  subPath: plant.yaml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.clickhouse.caSecret }}
- name: clickhouse-ca
  mountPath: /etc/plantstream/clickhouse
  readOnly: true
{{- end }}
{{- end -}}

{{- define "plantstream.podAnnotations" -}}
checksum/plant-config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/* The plaintext-secret guard ------------------------------------------------------------ */}}

{{/*
Walks the whole values tree (maps and lists). Fails the render, naming the key's path and the
existingSecret to use instead, when:
- a key that names a credential holds a non-empty value: password, token, secret, API/access
  key, connection string, Authorization header, librdkafka's sasl.password, ssl.key.pem,
  ssl.key.password, sasl.oauthbearer.client.secret … (keys ending in `Secret`, such as
  existingSecret, name a Secret and are references, not secrets);
- any string value is a URL with a password (`scheme://user:pass@`), a URL with a signature or
  key in its query (`sig=`, `code=`, `token=` …, as Teams and Logic Apps webhook URLs carry), or
  an Event Hubs connection string (`SharedAccessKey=`).
Include with (dict "path" "" "value" .Values).
*/}}
{{- define "plantstream.secretGuard" -}}
{{- range $key, $value := .value -}}
{{- $path := ternary (toString $key) (printf "%s.%s" $.path (toString $key)) (eq $.path "") -}}
{{- include "plantstream.secretGuardValue" (dict "path" $path "key" (toString $key) "value" $value) -}}
{{- end -}}
{{- end -}}

{{- define "plantstream.secretGuardValue" -}}
{{- $path := .path -}}
{{- $value := .value -}}
{{- if kindIs "map" $value -}}
{{- include "plantstream.secretGuard" (dict "path" $path "value" $value) -}}
{{- else if kindIs "slice" $value -}}
{{- range $i, $item := $value -}}
{{- include "plantstream.secretGuardValue" (dict "path" (printf "%s[%d]" $path $i) "key" "" "value" $item) -}}
{{- end -}}
{{- else if and (include "plantstream.isSecretKey" .key) $value -}}
{{- fail (printf "values key %s holds a plaintext secret: put it in a Kubernetes Secret and set %s instead (see values.yaml)" $path (include "plantstream.secretFor" $path)) -}}
{{- else if kindIs "string" $value -}}
{{- if regexMatch "[A-Za-z][A-Za-z0-9+.-]*://[^/@:\\s]*:[^/@\\s]+@" $value -}}
{{- fail (printf "values key %s holds a plaintext secret: a URL with a password (user:pass@); put it in a Kubernetes Secret and set %s instead (see values.yaml)" $path (include "plantstream.secretFor" $path)) -}}
{{- else if regexMatch "(?i)([?&;](sig|signature|code|token|access_token|api_key|apikey|key|password|secret)=[^&;\\s]+|SharedAccessKey=)" $value -}}
{{- fail (printf "values key %s holds a plaintext secret: a URL or connection string with a signature or key; put it in a Kubernetes Secret and set %s instead (see values.yaml)" $path (include "plantstream.secretFor" $path)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when a values key names a credential (not a reference to a Secret). */}}
{{- define "plantstream.isSecretKey" -}}
{{- $k := lower . -}}
{{- if and (ne . "") (not (regexMatch "[a-z0-9]Secret$" .)) -}}
{{- if regexMatch "(password|passwd|secret|token|apikey|api_key|api-key|accesskey|access_key|sharedaccesskey|shared_access_key|connectionstring|connection_string|authorization|credentials?|ssl\\.key\\.pem|keystore\\.pem)$" $k -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* The existingSecret key that replaces a plaintext secret at the given values path. */}}
{{- define "plantstream.secretFor" -}}
{{- $p := lower . -}}
{{- if or (hasPrefix "clickhouse.migrator." $p) (hasPrefix "plant.clickhouse.migrator." $p) -}}clickhouse.migrator.existingSecret
{{- else if or (hasPrefix "clickhouse.reader." $p) (hasPrefix "plant.clickhouse.reader." $p) -}}grafana.existingSecret
{{- else if or (hasPrefix "clickhouse." $p) (hasPrefix "plant.clickhouse." $p) -}}clickhouse.existingSecret
{{- else if or (hasPrefix "kafka." $p) (hasPrefix "plant.kafka." $p) -}}kafka.existingSecret
{{- else if or (hasPrefix "eventhubs." $p) (hasPrefix "plant.eventhubs." $p) -}}eventhubs.existingSecret
{{- else if or (hasPrefix "webhook." $p) (hasPrefix "plant.alerts.webhook." $p) -}}webhook.existingSecret
{{- else if or (hasPrefix "grafana." $p) -}}grafana.existingSecret
{{- else if or (hasPrefix "station." $p) (hasPrefix "plant.station." $p) -}}station.existingSecret
{{- else if and (hasPrefix "sources[" $p) (contains "private_key" $p) -}}{{ regexFind "^sources\\[[0-9]+\\]" $p }}.certificatesSecret
{{- else if hasPrefix "sources[" $p -}}{{ regexFind "^sources\\[[0-9]+\\]" $p }}.existingSecret
{{- else if contains "private_key" $p -}}connectors.opcua.certificatesSecret
{{- else if or (hasPrefix "connectors.opcua." $p) (hasPrefix "plant.opcua." $p) -}}connectors.opcua.existingSecret
{{- else if or (hasPrefix "connectors.mqtt." $p) (hasPrefix "plant.mqtt." $p) -}}connectors.mqtt.existingSecret
{{- else -}}the existingSecret of that section
{{- end -}}
{{- end -}}

{{/* NetworkPolicy egress rules ----------------------------------------------------------- */}}

{{- define "plantstream.egressTo" -}}
{{- $ports := .ports -}}
- to:
    {{- range .cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
    - namespaceSelector: {}
  ports:
    {{- range $ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end -}}
{{- define "plantstream.egressDns" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}
