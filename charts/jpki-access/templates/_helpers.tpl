{{- /* An image reference, from (list $ .Values.COMPONENT.image): REGISTRY/NAME:TAG[@DIGEST]. */ -}}
{{- define "jpki-access.image" -}}
{{- $root := index . 0 -}}{{- $image := index . 1 -}}
{{ $root.Values.image.registry }}/{{ $image.name }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}{{ with $image.digest }}@{{ . }}{{ end }}
{{- end -}}

{{- define "jpki-access.labels" -}}
app.kubernetes.io/name: jpki-access
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
