{{/* Names: every object is "<release>-<chart>" (or fullnameOverride) plus a suffix. */}}
{{- define "orchestrator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "orchestrator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "orchestrator.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "orchestrator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "orchestrator.rayCluster" -}}
{{- include "orchestrator.fullname" . -}}
{{- end -}}

{{/* The Ray dashboard (job API) address of the head service KubeRay creates. */}}
{{- define "orchestrator.rayDashboard" -}}
{{- printf "http://%s-head-svc.%s.svc:8265" (include "orchestrator.rayCluster" .) .Release.Namespace -}}
{{- end -}}

{{- define "orchestrator.controllerServiceAccount" -}}
{{- printf "%s-controller" (include "orchestrator.fullname" .) -}}
{{- end -}}

{{- define "orchestrator.workloadServiceAccount" -}}
{{- printf "%s-workload" (include "orchestrator.fullname" .) -}}
{{- end -}}

{{- define "orchestrator.dbSecret" -}}
{{- .Values.catalog.existingSecret | default (printf "%s-catalog" (include "orchestrator.fullname" .)) -}}
{{- end -}}

{{- define "orchestrator.claim" -}}
{{- .Values.storage.existingClaim | default (printf "%s-state" (include "orchestrator.fullname" .)) -}}
{{- end -}}

{{- define "orchestrator.authSecret" -}}
{{- .Values.ray.auth.secretName | default (include "orchestrator.rayCluster" .) -}}
{{- end -}}

{{/* Restricted pod security: non-root, no privilege escalation, no capabilities, the runtime's seccomp profile. */}}
{{- define "orchestrator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "orchestrator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnly }}
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Environment every orchestrator process shares: state folder, catalog URL, Ray auth mode. */}}
{{- define "orchestrator.env" -}}
- name: ORCHESTRATOR_HOME
  value: {{ .Values.storage.mountPath | quote }}
{{- if or .Values.catalog.existingSecret .Values.catalog.url }}
- name: ORCHESTRATOR_DB
  valueFrom:
    secretKeyRef:
      name: {{ include "orchestrator.dbSecret" . }}
      key: {{ .Values.catalog.secretKey }}
{{- end }}
- name: RAY_AUTH_MODE
  value: {{ .Values.ray.auth.mode | quote }}
{{- end -}}

{{/* A Ray node's host label is its Kubernetes node name (the downward API), so a host the
     controller cordons names the node to cordon. */}}
{{- define "orchestrator.rayNodeEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- if eq .Values.ray.hostLabel "env" }}
- name: RAY_OVERRIDE_LABELS
  value: '{"host": "$(NODE_NAME)"}'
{{- else if ne .Values.ray.hostLabel "rayStartParams" }}
{{- fail "ray.hostLabel must be env or rayStartParams" }}
{{- end }}
{{- end -}}

{{- define "orchestrator.rayMounts" -}}
- name: state
  mountPath: {{ .Values.storage.mountPath }}
- name: dshm
  mountPath: /dev/shm
{{- if .Values.ray.readOnlyRootFilesystem }}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/ray
{{- end }}
{{- end -}}

{{- define "orchestrator.rayVolumes" -}}
- name: state
  persistentVolumeClaim:
    claimName: {{ include "orchestrator.claim" .root }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .shm }}
{{- if .root.Values.ray.readOnlyRootFilesystem }}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* rayStartParams as KubeRay wants them (strings); `--labels host=$(NODE_NAME)` only for
     ray.hostLabel=rayStartParams (operators before KubeRay 1.5 accept it, later ones refuse it). */}}
{{- define "orchestrator.rayStartParams" -}}
{{- $out := dict -}}
{{- range $k, $v := .params -}}
{{- $_ := set $out $k (toString $v) -}}
{{- end -}}
{{- if eq .hostLabel "rayStartParams" -}}
{{- $_ := set $out "labels" "host=$(NODE_NAME)" -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
