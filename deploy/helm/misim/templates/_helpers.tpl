{{/* Name of the release's objects: the release name, or <release>-misim when it lacks "misim". */}}
{{- define "misim.fullname" -}}
{{- if contains "misim" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-misim" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; call with (dict "ctx" $ "component" "arm"). */}}
{{- define "misim.labels" -}}
app.kubernetes.io/name: misim
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- end -}}

{{/* Selector labels of one component's pods. */}}
{{- define "misim.selectorLabels" -}}
app.kubernetes.io/name: misim
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "misim.image" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}

{{/* In-cluster URLs of the parties. */}}
{{- define "misim.aadHost" -}}
{{ include "misim.fullname" . }}-aad.{{ .Release.Namespace }}.svc
{{- end -}}
{{- define "misim.aadUrl" -}}
http://{{ include "misim.aadHost" . }}:{{ .Values.aad.httpPort }}
{{- end -}}
{{- define "misim.aadGrpc" -}}
http://{{ include "misim.aadHost" . }}:{{ .Values.aad.grpcPort }}
{{- end -}}
{{- define "misim.msrpGrpc" -}}
http://{{ include "misim.fullname" . }}-msrp.{{ .Release.Namespace }}.svc:{{ .Values.msrp.grpcPort }}
{{- end -}}

{{/* Name of a control-plane TLS Secret; call with (dict "ctx" $ "role" "arm"). */}}
{{- define "misim.tlsSecret" -}}
{{- $prefix := .ctx.Values.controlTls.secretPrefix | default (printf "%s-tls" (include "misim.fullname" .ctx)) -}}
{{ $prefix }}-{{ .role }}
{{- end -}}

{{/* The listed nodes, checked: each needs a name and an IPv4 address. */}}
{{- define "misim.nodes" -}}
{{- if not .Values.hosts.nodes -}}
{{- fail "hosts.nodes is empty: list the nodes that run a simulated host, each {name: <node name>, address: <InternalIP>} (deploy/kubernetes/node-values.sh prints them)" -}}
{{- end -}}
{{- range .Values.hosts.nodes -}}
{{- if or (not .name) (not .address) -}}
{{- fail (printf "hosts.nodes entry %v needs both name (the node's name) and address (its InternalIP)" .) -}}
{{- end -}}
{{- if not (regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$" (toString .address)) -}}
{{- fail (printf "hosts.nodes %s: address %q is not an IPv4 address (use the node's InternalIP)" .name .address) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ARM's --host list: NAME=AGENT_URL per node. */}}
{{- define "misim.armHosts" -}}
{{- $port := .Values.hosts.agentPort -}}
{{- $hosts := list -}}
{{- range .Values.hosts.nodes -}}
{{- $hosts = append $hosts (printf "%s=http://%s:%v" .name .address $port) -}}
{{- end -}}
{{ join "," $hosts }}
{{- end -}}

{{/* Security context of the misim containers: no capability, no privilege escalation, read-only root. */}}
{{- define "misim.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* grpc.health.v1 probes of a party; call with (dict "ctx" $ "port" PORT "tls" BOOL "addr" ADDR).
With control-plane TLS, the kubelet's own gRPC probe cannot connect (it speaks plaintext), so the
probe is an exec of curl in the container: an HTTP/2 grpc.health.v1.Health/Check over mTLS with the
party's own certificate, passing only on the answer SERVING (frame 00 00000002, message 08 01).
A probe port set in values (a plaintext health listener) uses the kubelet's gRPC probe. */}}
{{- define "misim.grpcProbe" -}}
{{- if .tls -}}
exec:
  command:
    - /bin/sh
    - -c
    - {{ printf "printf '\\0\\0\\0\\0\\0' | curl -sS --http2 --max-time 4 --cacert /tls/ca.pem --cert /tls/cert.pem --key /tls/key.pem -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- https://%s:%v/grpc.health.v1.Health/Check | od -An -tx1 | tr -d ' \\n' | grep -qx 00000000020801" .addr .port | toJson }}
{{- else -}}
grpc:
  port: {{ .port }}
{{- end }}
timeoutSeconds: 5
periodSeconds: {{ .ctx.Values.probes.periodSeconds }}
failureThreshold: {{ .ctx.Values.probes.failureThreshold }}
{{- end -}}

{{- define "misim.grpcProbes" -}}
{{- $tls := and .tls (not .override) -}}
{{- $port := .override | default .port -}}
{{- $p := dict "ctx" .ctx "port" $port "tls" $tls "addr" (.addr | default "127.0.0.1") -}}
readinessProbe:
  {{- include "misim.grpcProbe" $p | nindent 2 }}
livenessProbe:
  {{- include "misim.grpcProbe" $p | nindent 2 }}
  initialDelaySeconds: 10
{{- end -}}
