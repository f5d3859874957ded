{{/*
Named templates. The public ones, for pod specs written by hand (docs/kubernetes.md):

  kelp.sidecar                        the kelp container as a list item, for `containers:`
  kelp.nativeSidecar                  the same with `restartPolicy: Always`, for `initContainers:`
                                      (Kubernetes 1.29 and later)
  kelp.volumes                        the volumes it mounts (quotas ConfigMap, SASL users
                                      Secret, peer Secret, TLS Secrets), as list items (empty when
                                      none)
  kelp.podLabels                      the pod label that marks a pod running kelp (what the
                                      NetworkPolicy selects), as map entries
  kelp.bootstrapServers               the address the application's Kafka client uses
  kelp.terminationGracePeriodSeconds  the shortest grace period that lets kelp drain

Each takes the kelp chart's context: `.` inside this chart, `.Subcharts.kelp` in a chart
that depends on it. The webhook injects exactly what kelp.sidecar prints (through the
ConfigMap made from kelp.sidecarFile), so hand-written and injected pods get the same kelp.
*/}}

{{- define "kelp.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kelp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kelp.webhook.fullname" -}}
{{- printf "%s-webhook" (include "kelp.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "kelp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "kelp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kelp.webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kelp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "kelp.webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kelp.webhook.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kelp.webhook.tlsSecretName" -}}
{{- if eq .Values.webhook.tls.mode "secret" -}}
{{- required "webhook.tls.secretName is required when webhook.tls.mode is secret" .Values.webhook.tls.secretName -}}
{{- else -}}
{{- default (printf "%s-tls" (include "kelp.webhook.fullname" .)) .Values.webhook.tls.secretName -}}
{{- end -}}
{{- end -}}

{{/* The DNS names the API server uses for the webhook's Service, as a list. */}}
{{- define "kelp.webhook.dnsNames" -}}
{{- $svc := include "kelp.webhook.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toYaml -}}
{{- end -}}

{{- define "kelp.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}

{{/* The port of a "host:port" address. */}}
{{- define "kelp.portOf" -}}
{{- regexFind "[0-9]+$" (toString .) -}}
{{- end -}}

{{/* A setting's value as kelp reads it: numbers without exponent, booleans as true/false. */}}
{{- define "kelp.settingValue" -}}
{{- if kindIs "float64" . -}}{{- int64 . -}}{{- else -}}{{- toString . -}}{{- end -}}
{{- end -}}

{{- define "kelp.kafkaPort" -}}
{{- include "kelp.portOf" (default "127.0.0.1:9092" .Values.config.listen) -}}
{{- end -}}

{{/* The admin server's port (config.adminListen), or nothing when it is off. */}}
{{- define "kelp.adminPort" -}}
{{- with (.Values.config | default dict).adminListen -}}
{{- include "kelp.portOf" . -}}
{{- end -}}
{{- end -}}

{{- define "kelp.bootstrapServers" -}}
{{- $listen := toString (default "127.0.0.1:9092" .Values.config.listen) -}}
{{- $host := regexReplaceAll ":[0-9]+$" $listen "" -}}
{{- if has $host (list "" "0.0.0.0" "[::]" "::") -}}
{{- $host = "127.0.0.1" -}}
{{- end -}}
{{- printf "%s:%s" $host (include "kelp.portOf" $listen) -}}
{{- end -}}

{{/* kelp drains for shutdownGraceMs (default 25 s) after SIGTERM, plus 5 s to exit. */}}
{{- define "kelp.terminationGracePeriodSeconds" -}}
{{- $ms := .Values.config.shutdownGraceMs -}}
{{- if or (kindIs "invalid" $ms) (eq (toString $ms) "") -}}
30
{{- else -}}
{{- add (div (add (int64 $ms) 999) 1000) 5 -}}
{{- end -}}
{{- end -}}

{{/* Name of the quotas ConfigMap, or nothing when quotas are off. */}}
{{- define "kelp.quotasConfigMap" -}}
{{- if and .Values.quotas.configMap .Values.quotas.rules -}}
{{- fail "set quotas.configMap or quotas.rules, not both" -}}
{{- else if .Values.quotas.configMap -}}
{{- .Values.quotas.configMap -}}
{{- else if .Values.quotas.rules -}}
{{- printf "%s-quotas" (include "kelp.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}
{{- end -}}

{{/* The label that marks pods running kelp; the webhook adds it to every pod it injects
     (src/webhook/inject.rs, SIDECAR_LABEL). */}}
{{- define "kelp.podLabels" -}}
kelp.io/sidecar: "true"
{{- end -}}

{{/* "true" when kelp gets the peer Secret: a peer listener that is not explicitly left
     unauthenticated. */}}
{{- define "kelp.peerSecretMounted" -}}
{{- $config := .Values.config | default dict -}}
{{- $open := eq (toString $config.peerAllowUnauthenticated) "true" -}}
{{- if and $config.peerListen $open $config.peerSecretFile -}}
{{- fail "config.peerSecretFile and config.peerAllowUnauthenticated=true contradict each other (kelp refuses to start): choose one" -}}
{{- end -}}
{{- if and $config.peerListen (not $open) -}}true{{- end -}}
{{- end -}}

{{/* Name of the peer Secret (only meaningful when kelp.peerSecretMounted). */}}
{{- define "kelp.peerSecretName" -}}
{{- if .Values.peerSecret.name -}}
{{- .Values.peerSecret.name -}}
{{- else if .Values.peerSecret.create -}}
{{- printf "%s-peer" (include "kelp.fullname" . | trunc 58 | trimSuffix "-") -}}
{{- else -}}
{{- fail "config.peerListen needs the peer secret: set peerSecret.name (an existing Secret), peerSecret.create=true, or config.peerAllowUnauthenticated=true on a trusted network" -}}
{{- end -}}
{{- end -}}

{{/* The peer listener's port, or nothing when it is off. */}}
{{- define "kelp.peerPort" -}}
{{- with (.Values.config | default dict).peerListen -}}
{{- include "kelp.portOf" . -}}
{{- end -}}
{{- end -}}

{{/* kelp's environment: one KELP_* variable per non-empty key of `config`, then extraEnv. */}}
{{- define "kelp.env" -}}
{{- $env := list -}}
{{- $config := .Values.config | default dict -}}
{{- range $key, $value := $config -}}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) -}}
{{- $env = append $env (dict "name" (printf "KELP_%s" (snakecase $key | upper)) "value" (include "kelp.settingValue" $value)) -}}
{{- end -}}
{{- end -}}
{{- /* With a quotas ConfigMap and config.quotasFile left empty, point it at the mount. */ -}}
{{- if and (include "kelp.quotasConfigMap" .) (not $config.quotasFile) -}}
{{- $env = append $env (dict "name" "KELP_QUOTAS_FILE" "value" (printf "%s/%s" .Values.quotas.mountPath .Values.quotas.key)) -}}
{{- end -}}
{{- /* With a SASL users Secret (sasl.secret), point config.saslUsersFile at its mount. */ -}}
{{- if and .Values.sasl.secret (not $config.saslUsersFile) -}}
{{- $env = append $env (dict "name" "KELP_SASL_USERS_FILE" "value" (printf "%s/%s" .Values.sasl.mountPath .Values.sasl.key)) -}}
{{- end -}}
{{- /* With a peer listener, point config.peerSecretFile at the mounted peer Secret. */ -}}
{{- if and (include "kelp.peerSecretMounted" .) (not $config.peerSecretFile) -}}
{{- $env = append $env (dict "name" "KELP_PEER_SECRET_FILE" "value" (printf "%s/%s" .Values.peerSecret.mountPath .Values.peerSecret.key)) -}}
{{- end -}}
{{- /* With a listener TLS Secret (listenerTls.secret), point the config.tls* files left empty at its mount. */ -}}
{{- $t := .Values.listenerTls -}}
{{- if $t.secret -}}
{{- if not $config.tlsCert -}}
{{- $env = append $env (dict "name" "KELP_TLS_CERT" "value" (printf "%s/%s" $t.mountPath $t.certKey)) -}}
{{- end -}}
{{- if not $config.tlsKey -}}
{{- $env = append $env (dict "name" "KELP_TLS_KEY" "value" (printf "%s/%s" $t.mountPath $t.keyKey)) -}}
{{- end -}}
{{- if and $t.clientCaKey (not $config.tlsClientCa) -}}
{{- $env = append $env (dict "name" "KELP_TLS_CLIENT_CA" "value" (printf "%s/%s" $t.mountPath $t.clientCaKey)) -}}
{{- end -}}
{{- end -}}
{{- /* The same for SeaweedFS's TLS Secret (seaweedfsTls.secret) and config.seaweedfsTls*. */ -}}
{{- $w := .Values.seaweedfsTls -}}
{{- if $w.secret -}}
{{- if not $config.seaweedfsTlsCa -}}
{{- $env = append $env (dict "name" "KELP_SEAWEEDFS_TLS_CA" "value" (printf "%s/%s" $w.mountPath $w.caKey)) -}}
{{- end -}}
{{- if not $config.seaweedfsTlsCert -}}
{{- $env = append $env (dict "name" "KELP_SEAWEEDFS_TLS_CERT" "value" (printf "%s/%s" $w.mountPath $w.certKey)) -}}
{{- end -}}
{{- if not $config.seaweedfsTlsKey -}}
{{- $env = append $env (dict "name" "KELP_SEAWEEDFS_TLS_KEY" "value" (printf "%s/%s" $w.mountPath $w.keyKey)) -}}
{{- end -}}
{{- end -}}
{{- concat $env (.Values.sidecar.extraEnv | default list) | toYaml -}}
{{- end -}}

{{/* The kelp container, as a YAML map. */}}
{{- define "kelp.sidecarContainer" -}}
{{- $s := .Values.sidecar -}}
{{- $c := dict "name" "kelp" "image" (include "kelp.image" .) "imagePullPolicy" .Values.image.pullPolicy "args" (list "serve") -}}
{{- $_ := set $c "env" (include "kelp.env" . | fromYamlArray) -}}
{{- $ports := list (dict "name" "kafka" "containerPort" (include "kelp.kafkaPort" . | int) "protocol" "TCP") -}}
{{- with include "kelp.adminPort" . -}}
{{- $ports = append $ports (dict "name" "admin" "containerPort" (int .) "protocol" "TCP") -}}
{{- end -}}
{{- $_ := set $c "ports" $ports -}}
{{- if and (not (include "kelp.adminPort" .)) (or $s.livenessProbe $s.readinessProbe $s.startupProbe) -}}
{{- fail "config.adminListen is off but sidecar probes are set: the probes use kelp's admin server" -}}
{{- end -}}
{{- range $field := list "resources" "livenessProbe" "readinessProbe" "startupProbe" "securityContext" "lifecycle" -}}
{{- with (index $s $field) -}}
{{- $_ := set $c $field . -}}
{{- end -}}
{{- end -}}
{{- $mounts := list -}}
{{- if include "kelp.quotasConfigMap" . -}}
{{- $mounts = append $mounts (dict "name" "kelp-quotas" "mountPath" .Values.quotas.mountPath "readOnly" true) -}}
{{- end -}}
{{- if .Values.sasl.secret -}}
{{- $mounts = append $mounts (dict "name" "kelp-sasl" "mountPath" .Values.sasl.mountPath "readOnly" true) -}}
{{- end -}}
{{- if include "kelp.peerSecretMounted" . -}}
{{- $mounts = append $mounts (dict "name" "kelp-peer" "mountPath" .Values.peerSecret.mountPath "readOnly" true) -}}
{{- end -}}
{{- if .Values.listenerTls.secret -}}
{{- $mounts = append $mounts (dict "name" "kelp-tls" "mountPath" .Values.listenerTls.mountPath "readOnly" true) -}}
{{- end -}}
{{- if .Values.seaweedfsTls.secret -}}
{{- $mounts = append $mounts (dict "name" "kelp-seaweedfs-tls" "mountPath" .Values.seaweedfsTls.mountPath "readOnly" true) -}}
{{- end -}}
{{- if $mounts -}}
{{- $_ := set $c "volumeMounts" $mounts -}}
{{- end -}}
{{- $_ := set $c "terminationMessagePolicy" "FallbackToLogsOnError" -}}
{{- toYaml $c -}}
{{- end -}}

{{- define "kelp.sidecar" -}}
- {{ include "kelp.sidecarContainer" . | indent 2 | trim }}
{{- end -}}

{{- define "kelp.nativeSidecar" -}}
{{- $c := include "kelp.sidecarContainer" . | fromYaml -}}
{{- $_ := set $c "restartPolicy" "Always" -}}
- {{ toYaml $c | indent 2 | trim }}
{{- end -}}

{{- define "kelp.volumes" -}}
{{- $volumes := list -}}
{{- with include "kelp.quotasConfigMap" . -}}
{{- $volumes = append $volumes (dict "name" "kelp-quotas" "configMap" (dict "name" .)) -}}
{{- end -}}
{{- with .Values.sasl.secret -}}
{{- $volumes = append $volumes (dict "name" "kelp-sasl" "secret" (dict "secretName" .)) -}}
{{- end -}}
{{- if include "kelp.peerSecretMounted" . -}}
{{- $volumes = append $volumes (dict "name" "kelp-peer" "secret" (dict "secretName" (include "kelp.peerSecretName" .))) -}}
{{- end -}}
{{- with .Values.listenerTls.secret -}}
{{- $volumes = append $volumes (dict "name" "kelp-tls" "secret" (dict "secretName" .)) -}}
{{- end -}}
{{- with .Values.seaweedfsTls.secret -}}
{{- $volumes = append $volumes (dict "name" "kelp-seaweedfs-tls" "secret" (dict "secretName" .)) -}}
{{- end -}}
{{- if $volumes -}}
{{- toYaml $volumes -}}
{{- end -}}
{{- end -}}

{{/* What the webhook injects: {"container": ..., "volumes": [...]}. */}}
{{- define "kelp.sidecarFile" -}}
{{- dict "container" (include "kelp.sidecarContainer" . | fromYaml) "volumes" (include "kelp.volumes" . | fromYamlArray) | toJson -}}
{{- end -}}

{{/* The webhook's environment: one KELP_WEBHOOK_* variable per key of webhook.config. */}}
{{- define "kelp.webhook.env" -}}
{{- $computed := dict "kubeVersion" .Capabilities.KubeVersion.Version "bootstrapServers" (include "kelp.bootstrapServers" .) -}}
{{- $env := list -}}
{{- range $key, $value := .Values.webhook.config -}}
{{- if or (kindIs "invalid" $value) (eq (toString $value) "") -}}
{{- $value = get $computed $key -}}
{{- end -}}
{{- if $value -}}
{{- $env = append $env (dict "name" (printf "KELP_WEBHOOK_%s" (snakecase $key | upper)) "value" (include "kelp.settingValue" $value)) -}}
{{- end -}}
{{- end -}}
{{- $env = append $env (dict "name" "KELP_LOG" "value" (toString .Values.webhook.logLevel)) -}}
{{- toYaml $env -}}
{{- end -}}
