{{/* Deployment helpers: quantities, connector data volumes, health probes. ----------------- */}}

{{/*
Bytes of a Kubernetes quantity without a fraction ("2Gi", "500M", "1073741824").
Include with the quantity string; fails naming the value when it cannot be read.
*/}}
{{- define "plantstream.bytes" -}}
{{- $q := toString . -}}
{{- if not (regexMatch "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$" $q) -}}
{{- fail (printf "size %q: give a whole number with an optional unit (Ki, Mi, Gi, Ti, k, M, G, T), e.g. 2Gi" $q) -}}
{{- end -}}
{{- $num := regexFind "^[0-9]+" $q -}}
{{- $unit := trimPrefix $num $q -}}
{{- $mult := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- mul (int64 $num) (int64 (get $mult $unit)) -}}
{{- end -}}

{{/*
The spool limit of a connector, checked against its volume: include with
(dict "name" "mqtt" "c" $c). Renders spoolMaxBytes; fails when it exceeds 90 % of the volume.
*/}}
{{- define "plantstream.spoolMaxBytes" -}}
{{- $p := .c.persistence -}}
{{- $size := include "plantstream.bytes" $p.size | int64 -}}
{{- $spool := int64 $p.spoolMaxBytes -}}
{{- if gt (mul $spool 10) (mul $size 9) -}}
{{- fail (printf "connectors.%s.persistence.spoolMaxBytes=%d does not fit in connectors.%s.persistence.size=%s (%d bytes): keep the spool at most 90%% of the volume (rejected.jsonl and the connector state share it): lower spoolMaxBytes to at most %d or raise size" .name $spool .name (toString $p.size) $size (div (mul $size 9) 10)) -}}
{{- end -}}
{{- $spool -}}
{{- end -}}

{{/* Startup, liveness and readiness probes on the health port (values health.*). */}}
{{- define "plantstream.healthProbes" -}}
startupProbe:
  httpGet: {path: /healthz, port: health}
  periodSeconds: 5
  failureThreshold: {{ max 1 (div (int .Values.health.startupSeconds) 5) }}
livenessProbe:
  httpGet: {path: /healthz, port: health}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: health}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}
