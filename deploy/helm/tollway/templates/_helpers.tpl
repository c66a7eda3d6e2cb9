{{- define "tollway.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tollway.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tollway.labels" -}}
{{ include "tollway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tollway.secretName" -}}
{{- .Values.existingSecret | default (include "tollway.fullname" .) -}}
{{- end -}}

{{/* The container settings shared by the Deployment and the migration Job. */}}
{{- define "tollway.container" -}}
image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  - name: TOLLWAY_CONFIG
    value: /etc/tollway/tollway.yaml
  - name: TOLLWAY_SPOOL_DIR
    value: /var/lib/tollway/spool
  {{- range $name, $value := .Values.env }}
  - name: {{ $name }}
    value: {{ $value | quote }}
  {{- end }}
envFrom:
  - secretRef:
      name: {{ include "tollway.secretName" . }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
volumeMounts:
  - name: config
    mountPath: /etc/tollway
    readOnly: true
  - name: data
    mountPath: /var/lib/tollway
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{- define "tollway.volumes" -}}
- name: config
  configMap:
    name: {{ include "tollway.fullname" . }}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}
