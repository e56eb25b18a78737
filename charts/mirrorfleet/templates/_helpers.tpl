{{/* Names, labels and the pieces every component shares. */}}

{{- define "mirrorfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object's name. */}}
{{- define "mirrorfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The labels of every object: the chart's, then commonLabels (which cannot replace
them), one key each. */}}
{{- define "mirrorfleet.labels" -}}
{{- $own := dict
  "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_")
  "app.kubernetes.io/name" (include "mirrorfleet.name" .)
  "app.kubernetes.io/instance" .Release.Name
  "app.kubernetes.io/version" .Chart.AppVersion
  "app.kubernetes.io/managed-by" .Release.Service
  "app.kubernetes.io/part-of" "mirrorfleet" -}}
{{- toYaml (merge $own (deepCopy .Values.commonLabels)) -}}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "redirector"). */}}
{{- define "mirrorfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mirrorfleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* (dict "root" $ "component" "redirector" "extra" .Values.redirector.podLabels): the
labels of one component's objects, then `extra` (which cannot replace them). */}}
{{- define "mirrorfleet.componentLabels" -}}
{{- $labels := fromYaml (include "mirrorfleet.labels" .root) -}}
{{- $_ := set $labels "app.kubernetes.io/component" .component -}}
{{- toYaml (merge $labels (deepCopy (default (dict) .extra))) -}}
{{- end -}}

{{- define "mirrorfleet.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "mirrorfleet.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "mirrorfleet.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "mirrorfleet.redirectorServiceAccount" -}}
{{- default (printf "%s-redirector" (include "mirrorfleet.fullname" .)) .Values.redirector.serviceAccount.name -}}
{{- end -}}

{{- define "mirrorfleet.redisName" -}}
{{- printf "%s-redis" (include "mirrorfleet.fullname" .) -}}
{{- end -}}

{{/* The store flags of the operator and the redirector (and through the operator, its
scan Jobs): the bundled Redis or its Sentinels, or the external ones. */}}
{{- define "mirrorfleet.storeArgs" -}}
{{- $redis := include "mirrorfleet.redisName" . -}}
{{- if eq .Values.redis.mode "bundled" -}}
{{- if .Values.redis.bundled.sentinel.enabled }}
- --sentinel=redis://{{ $redis }}-sentinel.{{ .Release.Namespace }}.svc:26379
- --sentinel-master={{ .Values.redis.bundled.sentinel.masterName }}
{{- else }}
- --redis=redis://{{ $redis }}.{{ .Release.Namespace }}.svc:6379/0
{{- end }}
{{- else if .Values.redis.external.url }}
- --redis={{ .Values.redis.external.url }}
{{- else }}
{{- range .Values.redis.external.sentinels }}
- --sentinel={{ . }}
{{- end }}
- --sentinel-master={{ required "redis.external.sentinelMaster is needed with redis.external.sentinels" .Values.redis.external.sentinelMaster }}
{{- end }}
{{- end -}}

{{/* The Redis password from its Secret, as the store reads it. */}}
{{- define "mirrorfleet.redisPasswordEnv" -}}
{{- if .Values.redis.passwordSecret }}
- name: MIRRORFLEET_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.passwordSecret }}
      key: {{ .Values.redis.passwordKey }}
{{- end }}
{{- end -}}

{{/* GeoIP flags, volume mounts, volumes and init containers. */}}
{{- define "mirrorfleet.geoipArgs" -}}
{{- if ne .Values.geoip.source "none" }}
{{- with .Values.geoip.cityFile }}
- --geoip-city=/geoip/{{ . }}
{{- end }}
{{- with .Values.geoip.asnFile }}
- --geoip-asn=/geoip/{{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "mirrorfleet.geoipMount" -}}
{{- if ne .Values.geoip.source "none" }}
- name: geoip
  mountPath: /geoip
  readOnly: true
{{- end }}
{{- end -}}

{{- define "mirrorfleet.geoipVolume" -}}
{{- if eq .Values.geoip.source "volume" }}
{{- if not .Values.geoip.volume }}
{{- fail "geoip.volume (a volume source, e.g. {persistentVolumeClaim: {claimName: geoip}}) is needed with geoip.source=volume" }}
{{- end }}
- name: geoip
  {{- toYaml .Values.geoip.volume | nindent 2 }}
{{- else if eq .Values.geoip.source "initContainer" }}
- name: geoip
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "mirrorfleet.geoipInit" -}}
{{- if eq .Values.geoip.source "initContainer" }}
{{- $c := .Values.geoip.initContainer }}
- name: geoip
  image: {{ required "geoip.initContainer.image is needed with geoip.source=initContainer" $c.image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- with $c.command }}
  command: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.args }}
  args: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.env }}
  env: {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext: {{- toYaml .Values.securityContext | nindent 4 }}
  resources: {{- toYaml $c.resources | nindent 4 }}
  volumeMounts:
    - name: geoip
      mountPath: /geoip
{{- end }}
{{- end -}}

{{/* Egress rules to Redis: the bundled pods, or the external addresses. */}}
{{- define "mirrorfleet.redisEgress" -}}
{{- if eq .Values.redis.mode "bundled" }}
- to:
    - podSelector:
        matchLabels:
          {{- include "mirrorfleet.selectorLabels" (dict "root" . "component" "redis") | nindent 10 }}
  ports:
    - { port: 6379, protocol: TCP }
    - { port: 26379, protocol: TCP }
{{- else }}
- ports:
    - { port: 6379, protocol: TCP }
    - { port: 26379, protocol: TCP }
  {{- with .Values.redis.external.cidrs }}
  to:
    {{- range . }}
    - ipBlock: { cidr: {{ . }} }
    {{- end }}
  {{- end }}
{{- end }}
{{- end -}}
