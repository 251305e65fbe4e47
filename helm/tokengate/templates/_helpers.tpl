{{/*
Names, labels, the rendered gateway config, and the tokengate container and volume, which a
chart of your own can include to add tokengate as a sidecar (see the README, "Kubernetes").
*/}}

{{- define "tokengate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokengate.fullname" -}}
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

{{- define "tokengate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokengate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tokengate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tokengate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "tokengate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokengate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tokengate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The name of the TLS Secret, or "" without TLS. */}}
{{- define "tokengate.tlsSecret" -}}
{{- if .Values.tls.enabled }}
{{- if .Values.tls.secretName }}
{{- .Values.tls.secretName }}
{{- else if and .Values.tls.cert .Values.tls.key }}
{{- printf "%s-tls" (include "tokengate.fullname" .) }}
{{- else }}
{{- fail "tls.enabled: set tls.secretName (an existing kubernetes.io/tls Secret) or both tls.cert and tls.key" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The config file: .Values.config (or exampleConfig while config is empty) plus the keys the chart owns (listen addresses, TLS files).
The files sit beside it in one projected volume, so relative paths stay valid.
*/}}
{{- define "tokengate.config" -}}
{{- $config := deepCopy (.Values.config | default .Values.exampleConfig | default dict) }}
{{- $server := get $config "server" | default dict }}
{{- if hasKey $server "listen" }}
{{- fail "config.server.listen is set by the chart from ports.http; remove it from config" }}
{{- end }}
{{- if hasKey $server "tls" }}
{{- fail "config.server.tls is set by the chart from tls.*; remove it from config" }}
{{- end }}
{{- if hasKey $config "admin" }}
{{- fail "config.admin is set by the chart from ports.admin; remove it from config" }}
{{- end }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%d" (int .Values.ports.http)) }}
{{- if .Values.tls.enabled }}
{{- $_ := set $server "tls" (dict "cert" "tls.crt" "key" "tls.key") }}
{{- end }}
{{- $_ := set $config "server" $server }}
{{- $_ := set $config "admin" (dict "listen" (printf "0.0.0.0:%d" (int .Values.ports.admin))) }}
{{- toYaml $config }}
{{- end }}

{{/*
What the gateway reads only at start (server.listen, admin.listen, server.tls on or off,
server.max_connections, server.max_header_bytes): its hash goes into the pod template, so a
change of one of these, and only these, rolls the pods. Everything else reloads in place.
*/}}
{{- define "tokengate.restartChecksum" -}}
{{- $server := get (.Values.config | default .Values.exampleConfig | default dict) "server" | default dict }}
{{- $startOnly := dict "listen" .Values.ports.http "admin" .Values.ports.admin "tls" .Values.tls.enabled "max_connections" (get $server "max_connections") "max_header_bytes" (get $server "max_header_bytes") }}
{{- toJson $startOnly | sha256sum }}
{{- end }}

{{/*
Pod annotations: the start-only checksum, and Prometheus scrape annotations unless a
ServiceMonitor scrapes the pods (never in mode embedded, where the Service is not ours).
*/}}
{{- define "tokengate.podAnnotations" -}}
checksum/start-only-settings: {{ include "tokengate.restartChecksum" . }}
{{- if or (eq .Values.mode "embedded") (not .Values.metrics.serviceMonitor.enabled) }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.admin | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Checks `files`; renders nothing. */}}
{{- define "tokengate.checkFiles" -}}
{{- range $name, $file := .Values.files }}
{{- if not (regexMatch "^[A-Za-z0-9][A-Za-z0-9._-]*$" $name) }}
{{- fail (printf "files.%s: a file name is one path segment of letters, digits, '.', '_' or '-'" $name) }}
{{- end }}
{{- if eq $name "tokengate.yaml" "tls.crt" "tls.key" }}
{{- fail (printf "files.%s: the name is taken by the chart" $name) }}
{{- end }}
{{- $sources := 0 }}
{{- range $k := list "content" "configMap" "secret" }}{{ if hasKey $file $k }}{{ $sources = add1 $sources }}{{ end }}{{ end }}
{{- if ne $sources 1 }}
{{- fail (printf "files.%s: set exactly one of content, configMap and secret" $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The projected volume: config, files and TLS pair as siblings in one directory. */}}
{{- define "tokengate.volume" -}}
- name: tokengate-config
  projected:
    defaultMode: 0444
    sources:
      - configMap:
          name: {{ include "tokengate.fullname" . }}
{{- range $name, $file := .Values.files }}
{{- if hasKey $file "configMap" }}
      - configMap:
          name: {{ required (printf "files.%s.configMap.name" $name) $file.configMap.name }}
          items:
            - key: {{ required (printf "files.%s.configMap.key" $name) $file.configMap.key }}
              path: {{ $name }}
{{- else if hasKey $file "secret" }}
      - secret:
          name: {{ required (printf "files.%s.secret.name" $name) $file.secret.name }}
          items:
            - key: {{ required (printf "files.%s.secret.key" $name) $file.secret.key }}
              path: {{ $name }}
              mode: 0440
{{- end }}
{{- end }}
{{- with include "tokengate.tlsSecret" . }}
      - secret:
          name: {{ . }}
          items:
            - { key: tls.crt, path: tls.crt, mode: 0440 }
            - { key: tls.key, path: tls.key, mode: 0440 }
{{- end }}
{{- if .Values.jwksCache.enabled }}
- name: jwks-cache
  emptyDir:
    sizeLimit: {{ .Values.jwksCache.sizeLimit }}
{{- end }}
{{- end }}

{{/* The tokengate container. */}}
{{- define "tokengate.container" -}}
- name: tokengate
  image: {{ include "tokengate.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - --log-format={{ .Values.logFormat }}
    - serve
    - --config=/etc/tokengate/tokengate.yaml
    {{- with .Values.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  env:
    - name: RUST_LOG
      value: {{ .Values.rustLog | quote }}
    {{- with .Values.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: http
      containerPort: {{ .Values.ports.http }}
      protocol: TCP
    - name: admin
      containerPort: {{ .Values.ports.admin }}
      protocol: TCP
  {{- with .Values.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if gt (int .Values.preStopSleepSeconds) 0 }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ .Values.preStopSleepSeconds }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: tokengate-config
      mountPath: /etc/tokengate
      readOnly: true
    {{- if .Values.jwksCache.enabled }}
    - name: jwks-cache
      mountPath: /var/cache/tokengate
    {{- end }}
{{- end }}
