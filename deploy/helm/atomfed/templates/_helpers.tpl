{{/* The release's base name: the release name, or <release>-atomfed. */}}
{{- define "atomfed.fullname" -}}
{{- if contains "atomfed" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-atomfed" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "atomfed.labels" -}}
app.kubernetes.io/name: atomfed
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "atomfed.selector" -}}
app.kubernetes.io/name: atomfed
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "atomfed.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "atomfed.serverName" -}}{{ include "atomfed.fullname" . }}-server{{- end -}}
{{- define "atomfed.headless" -}}{{ include "atomfed.fullname" . }}-server-headless{{- end -}}
{{- define "atomfed.apiService" -}}{{ include "atomfed.fullname" . }}{{- end -}}

{{/* Secret names: the existing one, else the one the job makes. */}}
{{- define "atomfed.tlsSecret" -}}{{ .Values.secrets.tls.existingSecret | default (printf "%s-tls" (include "atomfed.fullname" .)) }}{{- end -}}
{{- define "atomfed.gossipSecret" -}}{{ .Values.secrets.gossip.existingSecret | default (printf "%s-gossip" (include "atomfed.fullname" .)) }}{{- end -}}
{{- define "atomfed.tokenSecret" -}}{{ .Values.secrets.bootstrapToken.existingSecret | default (printf "%s-bootstrap-token" (include "atomfed.fullname" .)) }}{{- end -}}

{{/* Serf addresses of every server pod, for --join. */}}
{{- define "atomfed.join" -}}
{{- $names := list -}}
{{- range $i := until (int .Values.server.replicas) -}}
{{- $names = append $names (printf "%s-%d.%s.%s.svc.%s:%d" (include "atomfed.serverName" $) $i (include "atomfed.headless" $) $.Release.Namespace $.Values.clusterDomain (int $.Values.server.ports.serf)) -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* The agent's node name for a region. */}}
{{- define "atomfed.agentNode" -}}{{ .region.node | default (printf "%s-a1" .region.name) }}{{- end -}}

{{/* Task types agents leave out for the components switched off. */}}
{{- define "atomfed.disabledTaskTypes" -}}
{{- $off := list -}}
{{- if not .Values.components.federationSync.enabled -}}{{- $off = concat $off (list "global-publisher" "global-subscriber") -}}{{- end -}}
{{- if not .Values.components.tenantReplicator.enabled -}}{{- $off = concat $off (list "tenant-publisher" "tenant-subscriber" "sync-standby" "tenant-fence" "tenant-catchup" "tenant-promote" "tenant-detach") -}}{{- end -}}
{{- if not .Values.components.metricsAggregator.enabled -}}{{- $off = concat $off (list "metrics") -}}{{- end -}}
{{- if not .Values.components.drCoordinator.enabled -}}{{- $off = concat $off (list "backup" "restore-drill" "region-rebuild") -}}{{- end -}}
{{- join "," $off -}}
{{- end -}}

{{- define "atomfed.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "atomfed.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Checks the schema cannot express; each message says what to fix. */}}
{{- define "atomfed.validate" -}}
{{- if not .Values.components.registry.enabled -}}
{{- fail "components.registry.enabled: the region registry is the servers themselves and cannot be switched off; leave it true (switch off agents' work with the other components)" -}}
{{- end -}}
{{- if not .Values.components.policyManager.enabled -}}
{{- fail "components.policyManager.enabled: the policy manager (P1-P7, approvals) runs in every server and cannot be switched off; leave it true" -}}
{{- end -}}
{{- if and (not .Values.secrets.generate) (or (not .Values.secrets.tls.existingSecret) (not .Values.secrets.gossip.existingSecret) (not .Values.secrets.bootstrapToken.existingSecret)) -}}
{{- fail "secrets.generate is false: name every Secret then (secrets.tls.existingSecret, secrets.gossip.existingSecret, secrets.bootstrapToken.existingSecret), or set secrets.generate: true to have the one-time job make the missing ones" -}}
{{- end -}}
{{- if and .Values.components.edgeController.enabled (not .Values.edge.tokenSecret.name) -}}
{{- fail "components.edgeController.enabled: the edge needs a token: set edge.tokenSecret.name to a Secret holding a reader token (atomfed token create --role reader --description edge)" -}}
{{- end -}}
{{- $seen := dict -}}
{{- range .Values.agents.regions -}}
{{- $node := include "atomfed.agentNode" (dict "region" .) -}}
{{- if hasKey $seen $node -}}
{{- fail (printf "agents.regions: node %q appears twice; every agent needs its own node name (and its own token bound to it)" $node) -}}
{{- end -}}
{{- $_ := set $seen $node true -}}
{{- end -}}
{{- end -}}
