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

{{/* Whether the operator's namespaced rights are bound per watched namespace (RoleBindings)
or cluster-wide (ClusterRoleBindings): cluster-wide when it watches every namespace, or
globs (which a RoleBinding cannot name) when rbac.clusterWideForGlobs says so; otherwise the
chart refuses to render. "true" or "". */}}
{{- define "pilotboat.perNamespace" -}}
{{- $exact := include "pilotboat.exactNamespaces" . | fromYamlArray }}
{{- if .Values.watchNamespaces }}
{{- if eq (len $exact) (len .Values.watchNamespaces) -}}
true
{{- else if not .Values.rbac.clusterWideForGlobs }}
{{- fail "watchNamespaces has globs or negations (shop-*, !x): RBAC cannot bind a Role by a glob, so the operator would need its rights (Deployments, Services, ConfigMaps, Secrets) in every namespace. Name the namespaces, or set rbac.clusterWideForGlobs=true to accept cluster-wide bindings (docs/install.md)." }}
{{- end }}
{{- end }}
{{- end }}

{{/* The namespaces the namespaced rights are bound in (per-namespace mode). */}}
{{- define "pilotboat.boundNamespaces" -}}
{{- include "pilotboat.exactNamespaces" . }}
{{- end }}

{{/* The webhook Service (whose endpoint is the leader's pod) and the CA Secret. */}}
{{- define "pilotboat.webhookService" -}}
{{ .Release.Name }}-webhooks
{{- end }}
{{- define "pilotboat.webhookCA" -}}
{{ .Release.Name }}-webhook-ca
{{- end }}
{{- define "pilotboat.chartWebhooks" -}}
{{- if and .Values.webhooks.enabled (eq .Values.webhooks.registration "chart") -}}
true
{{- end }}
{{- end }}

{{/* The webhooks' namespaceSelector (JSON) on the label kubernetes.io/metadata.name, which
the API server sets on every Namespace, when every watched namespace is a name or a !name:
the same selector as pilotboat.handlers.webhooks.namespace_selector (a test compares them).
Empty when one is a glob (pilotboat.namespaceMatch selects them) or every namespace is
watched. */}}
{{- define "pilotboat.namespaceSelector" -}}
{{- $include := list }}
{{- $exclude := list }}
{{- $glob := false }}
{{- range .Values.watchNamespaces }}
{{- range splitList "," . }}
{{- $p := trim . }}
{{- if regexMatch `[*?]` $p }}
{{- $glob = true }}
{{- else if hasPrefix "!" $p }}
{{- $exclude = append $exclude (trimPrefix "!" $p) }}
{{- else if $p }}
{{- $include = append $include $p }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (not $glob) (or $include $exclude) }}
{{- $expressions := list }}
{{- range $operator, $values := dict "In" $include "NotIn" $exclude }}
{{- if $values }}
{{- $expressions = append $expressions (dict "key" "kubernetes.io/metadata.name" "operator" $operator "values" ($values | uniq | sortAlpha)) }}
{{- end }}
{{- end }}
{{- toJson (dict "matchExpressions" $expressions) }}
{{- end }}
{{- end }}

{{/* CEL selecting the watched namespaces in an admission request when one of them is a
glob: the same expression as pilotboat.handlers.webhooks.namespace_match_expression (a test
compares them). Empty when pilotboat.namespaceSelector selects them or every namespace is
watched. */}}
{{- define "pilotboat.namespaceMatch" -}}
{{- if not (include "pilotboat.namespaceSelector" .) }}
{{- $include := list }}
{{- $exclude := list }}
{{- range .Values.watchNamespaces }}
{{- range splitList "," . }}
{{- $p := trim . }}
{{- if $p }}
{{- $negated := hasPrefix "!" $p }}
{{- $p = trimPrefix "!" $p }}
{{- $regex := printf "^%s$" ($p | replace "-" `\-` | replace "*" ".*" | replace "?" ".") }}
{{- $cel := printf "request.namespace.matches('%s')" ($regex | replace `\` `\\`) }}
{{- if $negated }}
{{- $exclude = append $exclude $cel }}
{{- else }}
{{- $include = append $include $cel }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if or $include $exclude }}
{{- if not $include }}{{ $include = list "true" }}{{ end }}
{{- printf "(%s)" (join " || " $include) }}
{{- if $exclude }}{{ printf " && !(%s)" (join " || " $exclude) }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
