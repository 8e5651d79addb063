{{/*
Chart name, truncated to 63 chars (DNS label limit).
*/}}
{{- define "popup-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. If the release name already contains the chart
name it is used as is.
*/}}
{{- define "popup-operator.fullname" -}}
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

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "popup-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels (immutable: never add release-varying values here).
*/}}
{{- define "popup-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "popup-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Standard labels.
*/}}
{{- define "popup-operator.labels" -}}
helm.sh/chart: {{ include "popup-operator.chart" . }}
{{ include "popup-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: popup-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "popup-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "popup-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference; tag defaults to the chart appVersion. Also passed to
the operator as POPUP_SELF_IMAGE (simulator Job and native processor pods).
*/}}
{{- define "popup-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The namespaces the operator watches, as a JSON list (read it with fromJsonArray):
watchNamespaces, or the single watchNamespace; [] means every namespace.
*/}}
{{- define "popup-operator.watchNamespaces" -}}
{{- if and .Values.watchNamespace .Values.watchNamespaces }}
{{- fail "set watchNamespaces (a list) or watchNamespace (one namespace), not both: move the namespace into watchNamespaces" }}
{{- end }}
{{- if .Values.watchNamespace }}
{{- list .Values.watchNamespace | toJson }}
{{- else }}
{{- default (list) .Values.watchNamespaces | uniq | toJson }}
{{- end }}
{{- end }}

{{/*
The operator pods' selector labels as key=value,key=value: the operator lets
these pods into each store's Redis NetworkPolicy (POPUP_OPERATOR_POD_SELECTOR).
*/}}
{{- define "popup-operator.podSelector" -}}
{{- $pairs := list }}
{{- range $k, $v := include "popup-operator.selectorLabels" . | fromYaml }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
The controller's RBAC rules, the same in the ClusterRole and in every Role.
HAND-MAINTAINED COPY of src/controller/rbac.rs (the source; not generated, `bash hack/regen.sh` leaves it
alone): change the rules there first, then here; tests/helm.rs fails while the two differ.
docs/security.md says why each exists.
*/}}
{{- define "popup-operator.rules" -}}
# Watch PopUpStore custom resources.
- apiGroups: ["popup.dev"]
  resources: ["popupstores"]
  verbs: ["get", "list", "watch"]
# Server-side-apply the status subresource.
- apiGroups: ["popup.dev"]
  resources: ["popupstores/status"]
  verbs: ["get", "patch"]
# ownerReferences with blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
- apiGroups: ["popup.dev"]
  resources: ["popupstores/finalizers"]
  verbs: ["update"]
# Owned Secrets, Services, ConfigMaps (SSA; deleted when a spec change no longer wants them);
# user-referenced password Secrets are read, and Secrets' metadata is watched to apply a changed one at once.
- apiGroups: [""]
  resources: ["secrets", "services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The Redis pods, watched to report at once why one is not ready (e.g. no node can take it).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# The Redis StatefulSet.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Grafana and processor Deployments (Grafana's is deleted when the spec turns it off).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Simulator Jobs: created once (Jobs are immutable); a changed spec deletes the old Job.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Each store's NetworkPolicies (deleted when spec.networkPolicy.enabled turns false).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# kube-rs event recorder (events.k8s.io/v1).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
