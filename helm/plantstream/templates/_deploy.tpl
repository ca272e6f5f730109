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
(dict "name" "mqtt" "c" $c), optionally "path" (its values path, default connectors.<name>). Renders spoolMaxBytes; fails when it exceeds 90 % of the volume.
*/}}
{{- define "plantstream.spoolMaxBytes" -}}
{{- $p := .c.persistence -}}
{{- $size := include "plantstream.bytes" $p.size | int64 -}}
{{- $spool := int64 $p.spoolMaxBytes -}}
{{- if gt (mul $spool 10) (mul $size 9) -}}
{{- $at := .path | default (printf "connectors.%s" .name) -}}
{{- fail (printf "%s.persistence.spoolMaxBytes=%d does not fit in %s.persistence.size=%s (%d bytes): keep the spool at most 90%% of the volume (rejected.jsonl and the connector state share it): lower spoolMaxBytes to at most %d or raise size" $at $spool $at (toString $p.size) $size (div (mul $size 9) 10)) -}}
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

{{/*
The connectors to deploy, as JSON {"items": [...]}: the single top-level form (connectors.opcua
and connectors.mqtt with enabled: true; they read plant.yaml) and one per enabled entry of the
`sources` list (kind from its opcua:/mqtt: key, Kubernetes settings over connectors.<kind>; it
reads source-<name>.yaml). Each item: name, kind, path (the values path for messages), file,
c (the Kubernetes settings). Fails, with the fix, on a duplicate name or both forms for a kind.
*/}}
{{- define "plantstream.connectorList" -}}
{{- $items := list -}}
{{- $names := dict -}}
{{- range $name, $c := .Values.connectors -}}
{{- if $c.enabled -}}
{{- $items = append $items (dict "name" $name "kind" $name "path" (printf "connectors.%s" $name) "file" "plant.yaml" "c" $c) -}}
{{- $_ := set $names $name (printf "connectors.%s" $name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.sources (.Values.plant | default dict).sources -}}
{{- fail "plant.sources and sources are both set: give the list once, as sources (the chart writes it into plant.yaml and deploys a connector per entry); remove plant.sources" -}}
{{- end -}}
{{- range $i, $s := .Values.sources -}}
{{- $path := printf "sources[%d]" $i -}}
{{- if eq (hasKey $s "opcua") (hasKey $s "mqtt") -}}
{{- fail (printf "%s (%s): give exactly one of opcua: or mqtt: (an OPC UA server or an MQTT broker); list a second entry for the other" $path ($s.name | default "no name")) -}}
{{- end -}}
{{- $kind := ternary "opcua" "mqtt" (hasKey $s "opcua") -}}
{{- $k := get $.Values.connectors $kind -}}
{{- if $k.enabled -}}
{{- fail (printf "%s (%s) is an %s source while connectors.%s.enabled=true deploys the top-level plant.%s: use one form, e.g. --set connectors.%s.enabled=false and list that %s source under sources" $path $s.name $kind $kind $kind $kind $kind) -}}
{{- end -}}
{{- if hasKey $names $s.name -}}
{{- fail (printf "%s: the name %q is already used by %s; give every source its own name" $path $s.name (get $names $s.name)) -}}
{{- end -}}
{{- $_ := set $names $s.name $path -}}
{{- if or (not (hasKey $s "enabled")) $s.enabled -}}
{{- $c := mergeOverwrite (deepCopy $k) (omit $s "name" "enabled" "opcua" "mqtt") -}}
{{- $items = append $items (dict "name" $s.name "kind" $kind "path" $path "file" (printf "source-%s.yaml" $s.name) "c" $c) -}}
{{- end -}}
{{- end -}}
{{- dict "items" $items | toJson -}}
{{- end -}}

{{/*
The plant config's sources: list from the values' sources (name, enabled, opcua/mqtt only).
*/}}
{{- define "plantstream.plantSources" -}}
{{- $out := list -}}
{{- range .Values.sources -}}
{{- $out = append $out (pick . "name" "enabled" "opcua" "mqtt") -}}
{{- end -}}
{{- dict "sources" $out | toJson -}}
{{- end -}}
