{{- /*
Names, labels, selectors, the services' configuration files and their pods' common parts:
defined once here, used by every template. Helpers taking a component are called with
(dict "root" $ "component" "ingress"), those taking a service's values also with "service".
*/ -}}

{{- /* The chart's name, or nameOverride. */ -}}
{{- define "carrier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /*
The release-scoped base of every resource name: "<release>-carrier" (just "<release>" when it
already contains the chart's name), or fullnameOverride. At most 42 characters, so that the
longest derived name, "<fullname>-notifier-admin", is still a DNS label (63).
*/ -}}
{{- define "carrier.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 42 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* "<fullname>-<component>": a service's Deployment, Service, PDB, ... */ -}}
{{- define "carrier.componentName" -}}
{{- printf "%s-%s" (include "carrier.fullname" .root) .component -}}
{{- end -}}

{{- define "carrier.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "carrier.version" -}}
{{- .Values.image.tag | default .Chart.AppVersion | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* Selector labels: name and instance (the release), plus the component when given. */ -}}
{{- define "carrier.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carrier.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- /* Every resource's labels. */ -}}
{{- define "carrier.labels" -}}
helm.sh/chart: {{ include "carrier.chart" .root }}
{{ include "carrier.selectorLabels" . }}
app.kubernetes.io/version: {{ include "carrier.version" .root | quote }}
app.kubernetes.io/part-of: carrier
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "carrier.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository ($image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "carrier.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "carrier.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /* ------------------------------------------------------------------ Secrets */ -}}

{{- /* admin-token, token-signing-key (ingress only). */ -}}
{{- define "carrier.authSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "carrier.fullname" .)) -}}
{{- end -}}

{{- /* The Postgres URL (every service and the setup Job). */ -}}
{{- define "carrier.databaseSecretName" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "carrier.fullname" .)) -}}
{{- end -}}
{{- define "carrier.databaseSecretKey" -}}
{{- ternary .Values.database.existingSecretKey "database-url" (ne .Values.database.existingSecret "") -}}
{{- end -}}

{{- /* The Redis URL (ingress only). */ -}}
{{- define "carrier.redisSecretName" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "carrier.fullname" .)) -}}
{{- end -}}
{{- define "carrier.redisSecretKey" -}}
{{- ternary .Values.redis.existingSecretKey "redis-url" (ne .Values.redis.existingSecret "") -}}
{{- end -}}

{{- /* SMTP credentials (notifier only); empty when there are none. */ -}}
{{- define "carrier.smtpSecretName" -}}
{{- if .Values.smtp.existingSecret -}}
{{- .Values.smtp.existingSecret -}}
{{- else if or .Values.smtp.username .Values.smtp.password -}}
{{- printf "%s-smtp" (include "carrier.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- /* The internal service token (ingress, router, delivery). */ -}}
{{- define "carrier.internalAuthSecretName" -}}
{{- .Values.internalAuth.existingSecret | default (printf "%s-internal-auth" (include "carrier.fullname" .)) -}}
{{- end -}}

{{- /*
A value of a chart-generated Secret: the one given in values, else the one already in the
cluster (lookup: kept across upgrades), else a new random one. Called with
(dict "root" $ "secret" NAME "key" KEY "value" GIVEN).
*/ -}}
{{- define "carrier.generatedSecretValue" -}}
{{- if .value -}}
{{- .value | b64enc -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 48 | b64enc -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* ------------------------------------------------------------ Internal gRPC */ -}}

{{- define "carrier.grpcScheme" -}}
{{- ternary "https" "http" .Values.internalAuth.tls.enabled -}}
{{- end -}}

{{- /* Where ingress and delivery dial the router: its Service of this release. */ -}}
{{- define "carrier.routerUrl" -}}
{{- printf "%s://%s:%v" (include "carrier.grpcScheme" .) (include "carrier.componentName" (dict "root" . "component" "router")) .Values.ports.grpc -}}
{{- end -}}

{{- /* ------------------------------------------------------------ Configuration */ -}}

{{- /*
A component's configuration as JSON: what the chart derives from the structured values
(kafka, outbound, rateLimit, smtp), with config.common and config.<component> merged over it.
Secrets are refused here: they come from Secrets, as environment variables.
*/ -}}
{{- define "carrier.configValues" -}}
{{- $values := .root.Values -}}
{{- $component := .component -}}
{{- $config := dict "profile" "production" "kafka" (dict "brokers" $values.kafka.brokers "topic_prefix" $values.kafka.topicPrefix) -}}
{{- if eq $component "ingress" -}}
{{- $_ := set $config "rate_limit" (dict "trusted_proxies" $values.rateLimit.trustedProxies) -}}
{{- end -}}
{{- if or (eq $component "delivery") (eq $component "notifier") -}}
{{- $_ := set $config "outbound" (dict "allow_private" $values.outbound.allowPrivate "allowed_networks" $values.outbound.allowedNetworks) -}}
{{- end -}}
{{- if eq $component "notifier" -}}
{{- $smtp := dict "tls" $values.smtp.tls "from" $values.smtp.from -}}
{{- with $values.smtp.host }}{{ $_ := set $smtp "host" . }}{{ end -}}
{{- with $values.smtp.port }}{{ $_ := set $smtp "port" (int .) }}{{ end -}}
{{- $_ := set $config "smtp" $smtp -}}
{{- end -}}
{{- range $source := list "common" "ingress" "router" "delivery" "notifier" -}}
{{- $kafka := get (index $values.config $source) "kafka" -}}
{{- if and (kindIs "map" $kafka) (or (hasKey $kafka "brokers") (hasKey $kafka "topic_prefix")) -}}
{{- fail (printf "config.%s.kafka: set the brokers and the topic prefix with kafka.brokers and kafka.topicPrefix (the setup Job and KEDA read them too)" $source) -}}
{{- end -}}
{{- end -}}
{{- if ne $component "setup" -}}
{{- $config = mustMergeOverwrite $config (deepCopy $values.config.common) (deepCopy (index $values.config $component)) -}}
{{- else -}}
{{- $config = mustMergeOverwrite $config (deepCopy $values.config.common) -}}
{{- end -}}
{{- range $key := list "admin_token" "token_signing_key" "accepted_token_signing_keys" "database_url" -}}
{{- if hasKey $config $key -}}
{{- fail (printf "config: %s is a secret; set it through the chart's Secret values (auth, database), not in config" $key) -}}
{{- end -}}
{{- end -}}
{{- range $section, $key := dict "internal_auth" "service_token" "smtp" "password" "rate_limit" "redis_url" -}}
{{- if and (hasKey $config $section) (kindIs "map" (get $config $section)) (hasKey (get $config $section) $key) -}}
{{- fail (printf "config: %s.%s is a secret; set it through the chart's Secret values, not in config" $section $key) -}}
{{- end -}}
{{- end -}}
{{- toJson $config -}}
{{- end -}}

{{- /*
A TOML table, written out by hand: Helm's toToml turns every number into a float (8080.0),
which the services' integer fields refuse. Scalars and lists go through toJson (a JSON string,
number, boolean or list of them is valid TOML; <, > and & are written back from Go's \u
escapes for readability); maps become [sections]; nulls are left out.
Called with (dict "table" MAP "path" "").
*/ -}}
{{- define "carrier.toml" -}}
{{- $path := .path -}}
{{- range $key, $value := .table -}}
{{- if not (or (kindIs "map" $value) (kindIs "invalid" $value)) }}
{{- if kindIs "slice" $value -}}
{{- range $value -}}
{{- if or (kindIs "map" .) (kindIs "slice" .) -}}
{{- fail (printf "config: %s%s: lists may hold only strings, numbers and booleans" (ternary "" (printf "%s." $path) (eq $path "")) $key) -}}
{{- end -}}
{{- end -}}
{{- end }}
{{ $key }} = {{ toJson $value | replace "\\u003c" "<" | replace "\\u003e" ">" | replace "\\u0026" "&" }}
{{- end -}}
{{- end -}}
{{- range $key, $value := .table -}}
{{- if kindIs "map" $value -}}
{{- $section := ternary $key (printf "%s.%s" $path $key) (eq $path "") }}
[{{ $section }}]
{{- include "carrier.toml" (dict "table" $value "path" $section) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* A component's carrier.toml. */ -}}
{{- define "carrier.configToml" -}}
# Carrier {{ .component }} configuration, rendered by the Helm chart (values: config.*).
# Environment variables (CARRIER_*) override what is set here.
{{- include "carrier.toml" (dict "table" (include "carrier.configValues" . | fromJson) "path" "") }}
{{- end -}}

{{- /* ------------------------------------------------------------------- Pods */ -}}

{{- /*
The environment of a component's container: the chart's wiring (listen addresses, where the
router is, the advertised control URL) and each Secret only where it is used. Called with
(dict "root" $ "component" NAME "service" VALUES).
*/ -}}
{{- define "carrier.env" -}}
{{- $root := .root -}}
{{- $values := .root.Values -}}
{{- $component := .component -}}
- name: CARRIER_CONFIG_FILE
  value: /etc/carrier/config/carrier.toml
- name: RUST_LOG
  value: {{ $values.logLevel | quote }}
- name: CARRIER_LOG_FORMAT
  value: {{ $values.logFormat | quote }}
{{- if eq $component "ingress" }}
- name: CARRIER_HTTP_ADDR
  value: "0.0.0.0:{{ $values.ports.public }}"
- name: CARRIER_ADMIN_ADDR
  value: "0.0.0.0:{{ $values.ports.admin }}"
{{- else }}
- name: CARRIER_HTTP_ADDR
  value: "0.0.0.0:{{ $values.ports.admin }}"
{{- end }}
{{- if eq $component "router" }}
- name: CARRIER_GRPC_ADDR
  value: "0.0.0.0:{{ $values.ports.grpc }}"
{{- end }}
{{- if eq $component "delivery" }}
# Each worker registers where ingress reaches its control service: its own pod IP.
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: CARRIER_CONTROL_ADDR
  value: "0.0.0.0:{{ $values.ports.control }}"
- name: CARRIER_CONTROL_ADVERTISE_URL
  value: "{{ include "carrier.grpcScheme" $root }}://$(POD_IP):{{ $values.ports.control }}"
{{- end }}
{{- if or (eq $component "ingress") (eq $component "delivery") }}
- name: CARRIER_ROUTER_URL
  value: {{ include "carrier.routerUrl" $root | quote }}
{{- end }}
- name: CARRIER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "carrier.databaseSecretName" $root }}
      key: {{ include "carrier.databaseSecretKey" $root }}
{{- if eq $component "ingress" }}
- name: CARRIER_RATE_LIMIT__REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "carrier.redisSecretName" $root }}
      key: {{ include "carrier.redisSecretKey" $root }}
- name: CARRIER_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "carrier.authSecretName" $root }}
      key: admin-token
- name: CARRIER_TOKEN_SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "carrier.authSecretName" $root }}
      key: token-signing-key
- name: CARRIER_ACCEPTED_TOKEN_SIGNING_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "carrier.authSecretName" $root }}
      key: accepted-token-signing-keys
      optional: true
{{- end }}
{{- if ne $component "notifier" }}
- name: CARRIER_INTERNAL_AUTH__SERVICE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "carrier.internalAuthSecretName" $root }}
      key: service-token
{{- if $values.internalAuth.tls.enabled }}
- name: CARRIER_INTERNAL_AUTH__TLS_CERT_PATH
  value: /etc/carrier/internal-tls/tls.crt
- name: CARRIER_INTERNAL_AUTH__TLS_KEY_PATH
  value: /etc/carrier/internal-tls/tls.key
- name: CARRIER_INTERNAL_AUTH__TLS_CA_PATH
  value: /etc/carrier/internal-tls/ca.crt
- name: CARRIER_INTERNAL_AUTH__TLS_SERVER_NAME
  value: {{ $values.internalAuth.tls.serverName | quote }}
{{- end }}
{{- end }}
{{- $smtpSecret := include "carrier.smtpSecretName" $root }}
{{- if and (eq $component "notifier") $smtpSecret }}
- name: CARRIER_SMTP__USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $smtpSecret }}
      key: smtp-username
      optional: true
- name: CARRIER_SMTP__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $smtpSecret }}
      key: smtp-password
      optional: true
{{- end }}
{{- with $values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .service.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- /*
The values of the Secrets a component reads (not the generated ones, which stay the same): their
checksum restarts its pods when one changes.
*/ -}}
{{- define "carrier.secretInputs" -}}
{{- $values := .root.Values -}}
{{- $inputs := dict "database" $values.database -}}
{{- if eq .component "ingress" -}}
{{- $_ := set $inputs "auth" $values.auth -}}
{{- $_ := set $inputs "redis" $values.redis -}}
{{- end -}}
{{- if ne .component "notifier" -}}
{{- $_ := set $inputs "internalAuth" $values.internalAuth -}}
{{- else -}}
{{- $_ := set $inputs "smtp" (pick $values.smtp "username" "password" "existingSecret") -}}
{{- end -}}
{{- toJson $inputs -}}
{{- end -}}

{{- /* Startup, readiness and liveness probes on the admin port. */ -}}
{{- define "carrier.probes" -}}
{{- $probes := mustMergeOverwrite (deepCopy .root.Values.probes) (deepCopy (.service.probes | default dict)) -}}
startupProbe:
  httpGet: { path: /healthz, port: admin }
  {{- toYaml (get $probes "startup") | nindent 2 }}
readinessProbe:
  httpGet: { path: /readyz, port: admin }
  {{- toYaml (get $probes "readiness") | nindent 2 }}
livenessProbe:
  httpGet: { path: /healthz, port: admin }
  {{- toYaml (get $probes "liveness") | nindent 2 }}
{{- end -}}

{{- /* Zone and node spread of a component's pods, or the service's own constraints. */ -}}
{{- define "carrier.topologySpreadConstraints" -}}
{{- $spread := .root.Values.topologySpread -}}
{{- if .service.topologySpreadConstraints -}}
{{ toYaml .service.topologySpreadConstraints }}
{{- else if $spread.enabled -}}
{{- $selector := include "carrier.selectorLabels" . -}}
{{- range $key, $when := dict "topology.kubernetes.io/zone" $spread.zoneWhenUnsatisfiable "kubernetes.io/hostname" $spread.hostnameWhenUnsatisfiable }}
- maxSkew: {{ $spread.maxSkew }}
  topologyKey: {{ $key }}
  whenUnsatisfiable: {{ $when }}
  labelSelector:
    matchLabels:
      {{- $selector | nindent 6 }}
  matchLabelKeys: [pod-template-hash]
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* The pod security context every pod of the chart uses (restricted). */ -}}
{{- define "carrier.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}
{{- define "carrier.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}
