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
- name: PLANTSTREAM__CLICKHOUSE__USERNAME
  value: {{ .Values.clickhouse.username | quote }}
{{- if .Values.clickhouse.existingSecret }}
- name: PLANTSTREAM__CLICKHOUSE__PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.clickhouse.existingSecret | quote }}, key: {{ .Values.clickhouse.passwordKey | quote }}}
{{- end }}
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
Walks the whole values tree. A key that names a credential (password, connection string,
token, private key, …) holding a non-empty value fails the render with the key's path and the
existingSecret to use instead. Include with (dict "path" "" "value" .Values).
*/}}
{{- define "plantstream.secretGuard" -}}
{{- $secretKeys := list "password" "saslpassword" "sasl_password" "connectionstring" "connection_string" "privatekeypassword" "private_key_password" "token" "secret" "apikey" "api_key" "accesskey" "access_key" "sharedaccesskey" "shared_access_key" "clientsecret" "client_secret" -}}
{{- range $key, $value := .value -}}
{{- $path := ternary $key (printf "%s.%s" $.path $key) (eq $.path "") -}}
{{- if kindIs "map" $value -}}
{{- include "plantstream.secretGuard" (dict "path" $path "value" $value) -}}
{{- else if and (has (lower $key) $secretKeys) $value -}}
{{- fail (printf "values key %s holds a plaintext secret: put it in a Kubernetes Secret and set %s instead (see values.yaml)" $path (include "plantstream.secretFor" $path)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The existingSecret key that replaces a plaintext secret at the given values path. */}}
{{- define "plantstream.secretFor" -}}
{{- $p := lower . -}}
{{- if or (hasPrefix "clickhouse." $p) (hasPrefix "plant.clickhouse." $p) -}}clickhouse.existingSecret
{{- else if or (hasPrefix "kafka." $p) (hasPrefix "plant.kafka." $p) -}}kafka.existingSecret
{{- else if or (hasPrefix "eventhubs." $p) (hasPrefix "plant.eventhubs." $p) -}}eventhubs.existingSecret
{{- else if or (hasPrefix "grafana." $p) -}}grafana.existingSecret
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
