{{- define "pilotboat.labels" -}}
app.kubernetes.io/name: pilotboat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pilotboat.selector" -}}
app.kubernetes.io/name: pilotboat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator image: pinned by digest when one is given, else by tag. */}}
{{- define "pilotboat.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* Watched namespaces that are plain names (no glob, no negation): they get a KopfPeering. */}}
{{- define "pilotboat.exactNamespaces" -}}
{{- range .Values.watchNamespaces }}
{{- if not (or (contains "*" .) (contains "?" .) (hasPrefix "!" .)) }}
- {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Lease the replicas elect a leader with. */}}
{{- define "pilotboat.lease" -}}
pilotboat-{{ .Values.peering.name }}
{{- end }}
