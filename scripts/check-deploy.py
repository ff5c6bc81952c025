"""The deployment checks of scripts/check-deploy.sh: the Helm chart, docker-compose.yml, and the
Prometheus rules, runbooks, Grafana dashboards and metrics reference.

Run by check-deploy.sh with the Python of its virtualenv (helm-python-sdk: Helm's own Go SDK,
v4, through a C library; jsonschema; PyYAML). Each failed check prints one `check-deploy: FAIL`
line saying what is wrong; the exit status is the number of failures (capped at 1).

    check-deploy.py chart CHART_DIR         lint, values schema, rendering
    check-deploy.py compose CONFIG_YAML     what `docker-compose config` printed
    check-deploy.py observability PROMTOOL  deploy/prometheus, deploy/grafana, docs/runbooks,
                                            docs/metrics.md (with the promtool at PROMTOOL)
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import yaml

FAILURES: list[str] = []


def fail(message: str) -> None:
    FAILURES.append(message)
    print(f"check-deploy: FAIL: {message}", file=sys.stderr)


def ok(message: str) -> None:
    print(f"check-deploy: ok: {message}", file=sys.stderr)


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# ------------------------------------------------------------------------------- chart

COMPONENTS = ("ingress", "router", "delivery", "notifier")

# Which containers may read which Secret-backed variable (brief: each secret only where it is
# used; the services' Config structs under services/*/src/lib.rs say who reads what). The setup
# Job's containers are "setup/topics" and "setup/migrate".
SECRET_ENV_ALLOWED = {
    "CARRIER_ADMIN_TOKEN": {"ingress"},
    "CARRIER_TOKEN_SIGNING_KEY": {"ingress"},
    "CARRIER_ACCEPTED_TOKEN_SIGNING_KEYS": {"ingress"},
    "CARRIER_RATE_LIMIT__REDIS_URL": {"ingress"},
    "CARRIER_SMTP__USERNAME": {"notifier"},
    "CARRIER_SMTP__PASSWORD": {"notifier"},
    "CARRIER_INTERNAL_AUTH__SERVICE_TOKEN": {"ingress", "router", "delivery"},
    "CARRIER_DATABASE_URL": {"ingress", "router", "delivery", "notifier", "setup/migrate"},
}
# ... and which must have it.
SECRET_ENV_REQUIRED = {
    "CARRIER_ADMIN_TOKEN": {"ingress"},
    "CARRIER_TOKEN_SIGNING_KEY": {"ingress"},
    "CARRIER_RATE_LIMIT__REDIS_URL": {"ingress"},
    "CARRIER_INTERNAL_AUTH__SERVICE_TOKEN": {"ingress", "router", "delivery"},
    "CARRIER_DATABASE_URL": {"ingress", "router", "delivery", "notifier"},
}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
# Volume types Pod Security "restricted" allows.
RESTRICTED_VOLUMES = {"configMap", "secret", "emptyDir", "projected", "downwardAPI",
                      "persistentVolumeClaim", "ephemeral", "csi"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Chart:
    """The chart at `path`, through Helm's SDK."""

    def __init__(self, path: Path):
        import helm_python  # the native library loads here (about 100 MB)

        self.helm = helm_python
        self.path = path
        self.defaults = yaml.safe_load((path / "values.yaml").read_text())
        self.schema = json.loads((path / "values.schema.json").read_text())

    def lint(self, values: dict | None) -> dict:
        return self.helm.lint(str(self.path), values, strict=True)

    def render(self, values: dict | None, name: str, namespace: str = "carrier") -> dict[str, str]:
        with self.helm.Chart.load(str(self.path)) as chart:
            return chart.render(values or {}, name=name, namespace=namespace, is_install=True)

    def merged(self, values: dict | None) -> dict:
        with self.helm.Chart.load(str(self.path)) as chart:
            return chart.merge_values(values or {})


def documents(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """Every non-empty YAML document of a render, with the template it came from."""
    out = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        try:
            for document in yaml.safe_load_all(text):
                if document:
                    out.append((template, document))
        except yaml.YAMLError as error:
            fail(f"{template}: the rendered YAML does not parse: {error}")
    return out


def pod_specs(docs):
    """(owner kind/name, component, pod spec) of every Deployment and Job."""
    for _, doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            component = doc["metadata"]["labels"].get("app.kubernetes.io/component", "?")
            yield f"{doc['kind']}/{doc['metadata']['name']}", component, doc["spec"]["template"]["spec"]


def check_render(label: str, values: dict, merged: dict, rendered: dict[str, str], release: str):
    docs = documents(rendered)
    by_kind: dict[str, dict[str, dict]] = {}
    for template, doc in docs:
        for field in ("apiVersion", "kind", "metadata"):
            if field not in doc:
                fail(f"{label}: {template}: a document without {field}")
                continue
        kind, name = doc["kind"], doc["metadata"].get("name", "")
        if name in by_kind.setdefault(kind, {}):
            fail(f"{label}: two {kind} named {name}")
        by_kind[kind][name] = doc
        limit = 63 if kind == "Service" else 253
        if len(name) > limit or not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name):
            fail(f"{label}: {kind} {name!r} is not a valid name (at most {limit} characters)")
        if kind == "Service" and not DNS_LABEL.match(name):
            fail(f"{label}: Service {name!r} is not a DNS label")
        labels = doc["metadata"].get("labels", {})
        for key in STANDARD_LABELS:
            if key not in labels:
                fail(f"{label}: {kind}/{name} lacks the label {key}")
        if labels.get("app.kubernetes.io/instance") != release:
            fail(f"{label}: {kind}/{name} has app.kubernetes.io/instance {labels.get('app.kubernetes.io/instance')!r}")

    # What the pods may refer to without the chart creating it: existingSecrets, the internal
    # TLS Secret, a ServiceAccount of the operator's.
    external_secrets = {merged[section]["existingSecret"]
                        for section in ("database", "redis", "auth", "smtp", "internalAuth")
                        if merged[section].get("existingSecret")}
    if merged["internalAuth"]["tls"]["enabled"]:
        external_secrets.add(merged["internalAuth"]["tls"]["secretName"])
    # ... and the Secrets of the operator's own extraVolumes.
    extra_volumes = list(merged["extraVolumes"]) + list(merged["setupJob"]["extraVolumes"])
    for component in COMPONENTS:
        extra_volumes += merged["services"][component]["extraVolumes"]
    own_volume_secrets = {v["secret"]["secretName"] for v in extra_volumes if "secret" in v}
    external_secrets |= own_volume_secrets
    secrets = set(by_kind.get("Secret", {})) | external_secrets
    config_maps = set(by_kind.get("ConfigMap", {}))
    service_accounts = set(by_kind.get("ServiceAccount", {}))
    if not merged["serviceAccount"]["create"]:
        service_accounts.add(merged["serviceAccount"]["name"] or "default")

    deployments = by_kind.get("Deployment", {})
    found = {doc["metadata"]["labels"]["app.kubernetes.io/component"] for doc in deployments.values()}
    if found != set(COMPONENTS):
        fail(f"{label}: Deployments for {sorted(found)}, expected {sorted(COMPONENTS)}")

    seen_secret_env: dict[str, set[str]] = {}
    for owner, component, spec in pod_specs(docs):
        check_pod_security(f"{label}: {owner}", spec)
        is_job = owner.startswith("Job/")
        sa = spec.get("serviceAccountName", "default")
        if sa not in service_accounts and not (is_job and sa == "default"):
            fail(f"{label}: {owner} runs as ServiceAccount {sa!r}, which is neither rendered nor declared")
        for volume in spec.get("volumes", []):
            if "secret" in volume and volume["secret"]["secretName"] not in secrets:
                fail(f"{label}: {owner} mounts Secret {volume['secret']['secretName']!r}, which is neither rendered nor an existingSecret")
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                fail(f"{label}: {owner} mounts ConfigMap {volume['configMap']['name']!r}, which is not rendered")
            if "secret" in volume and component == "notifier" and volume["secret"]["secretName"] not in own_volume_secrets:
                fail(f"{label}: {owner} (notifier) mounts Secret {volume['secret']['secretName']!r}")
        containers = spec.get("initContainers", []) + spec["containers"]
        for container in containers:
            who = f"setup/{container['name']}" if is_job else component
            env = {item["name"]: item for item in container.get("env", [])}
            if env.get("CARRIER_CONFIG_FILE", {}).get("value") != "/etc/carrier/config/carrier.toml":
                fail(f"{label}: {owner}/{container['name']} has no CARRIER_CONFIG_FILE at the mounted carrier.toml")
            for name, item in env.items():
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if not ref:
                    continue
                if ref["name"] not in secrets:
                    fail(f"{label}: {owner} reads {name} from Secret {ref['name']!r}, which is neither rendered nor an existingSecret")
                if name not in SECRET_ENV_ALLOWED:
                    fail(f"{label}: {owner}: {name} comes from a Secret the checks do not know; add it to SECRET_ENV_ALLOWED")
                elif who not in SECRET_ENV_ALLOWED[name]:
                    fail(f"{label}: {owner}/{container['name']} gets {name}, which only {sorted(SECRET_ENV_ALLOWED[name])} may read")
                seen_secret_env.setdefault(name, set()).add(who)
            resources = container.get("resources", {})
            if not resources.get("requests") or not resources.get("limits", {}).get("memory"):
                fail(f"{label}: {owner}/{container['name']} lacks resource requests or a memory limit")
            if not is_job:
                check_service_container(label, owner, component, spec, container, env, merged, release)
        if is_job:
            check_setup_job(label, owner, spec, merged)
    for name, required in SECRET_ENV_REQUIRED.items():
        missing = required - seen_secret_env.get(name, set())
        if missing:
            fail(f"{label}: {name} is missing in {sorted(missing)}")

    services = by_kind.get("Service", {})
    for name, deployment in deployments.items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for item in container.get("env", []):
                if item["name"] == "CARRIER_ROUTER_URL":
                    host = re.sub(r"^[a-z]+://([^:/]+).*$", r"\1", item["value"])
                    grpc = [p for p in services.get(host, {}).get("spec", {}).get("ports", []) if p["name"] == "grpc"]
                    if not grpc:
                        fail(f"{label}: Deployment {name} dials the router at {item['value']}, not a gRPC Service of this release")
    check_selectors_and_targets(label, by_kind, merged)
    check_config_maps(label, by_kind, merged)
    check_monitoring(label, by_kind, merged)
    return by_kind


def check_monitoring(label, by_kind, merged):
    """The PrometheusRule holds deploy/prometheus's groups, the dashboards ConfigMap deploy/grafana's files."""
    repo = Path(__file__).resolve().parent.parent
    rules = [d for n, d in by_kind.get("PrometheusRule", {}).items()]
    if merged["prometheusRule"]["enabled"] != bool(rules):
        fail(f"{label}: {len(rules)} PrometheusRule(s) rendered, prometheusRule.enabled is {merged['prometheusRule']['enabled']}")
    for rule in rules:
        text = yaml.safe_dump((yaml.safe_load((repo / "deploy/prometheus/carrier-rules.yml").read_text()))["groups"])
        base = merged["prometheusRule"]["runbookBaseUrl"]
        if base:
            text = text.replace("runbook_url: docs/runbooks/", f"runbook_url: {base}")
        if rule["spec"]["groups"] != yaml.safe_load(text):
            fail(f"{label}: PrometheusRule {rule['metadata']['name']} differs from deploy/prometheus/carrier-rules.yml")
        for key, value in merged["prometheusRule"]["labels"].items():
            if rule["metadata"]["labels"].get(key) != value:
                fail(f"{label}: PrometheusRule lacks the label {key}: {value}")
    boards = [d for n, d in by_kind.get("ConfigMap", {}).items() if n.endswith("-dashboards")]
    if merged["grafanaDashboards"]["enabled"] != bool(boards):
        fail(f"{label}: {len(boards)} dashboard ConfigMap(s) rendered, grafanaDashboards.enabled is {merged['grafanaDashboards']['enabled']}")
    for board in boards:
        wanted = {p.name: p.read_text() for p in sorted((repo / "deploy/grafana/dashboards").glob("*.json"))}
        data = board.get("data", {})
        if set(data) != set(wanted) or any(json.loads(data[k]) != json.loads(v) for k, v in wanted.items()):
            fail(f"{label}: ConfigMap {board['metadata']['name']} does not hold deploy/grafana/dashboards")
        for key, value in merged["grafanaDashboards"]["labels"].items():
            if board["metadata"]["labels"].get(key) != value:
                fail(f"{label}: ConfigMap {board['metadata']['name']} lacks the label {key}: {value}")


def check_pod_security(owner: str, spec: dict) -> None:
    """Pod Security Standards "restricted", plus the chart's own rules (no token, read-only /)."""
    pod = spec.get("securityContext", {})
    if spec.get("automountServiceAccountToken") is not False:
        fail(f"{owner}: automountServiceAccountToken is not false")
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            fail(f"{owner}: {host} is set")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            fail(f"{owner}: volume {volume['name']} of type {sorted(kinds)} is not allowed by restricted")
    if not any(v["name"] == "tmp" and "emptyDir" in v for v in spec.get("volumes", [])):
        fail(f"{owner}: no emptyDir volume named tmp")
    for container in spec.get("initContainers", []) + spec["containers"]:
        where = f"{owner}/{container['name']}"
        sc = container.get("securityContext", {})
        run_as_non_root = sc.get("runAsNonRoot", pod.get("runAsNonRoot"))
        run_as_user = sc.get("runAsUser", pod.get("runAsUser"))
        seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if run_as_non_root is not True:
            fail(f"{where}: runAsNonRoot is not true")
        if run_as_user in (None, 0):
            fail(f"{where}: runAsUser is {run_as_user!r}")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("capabilities", {}).get("add"):
            fail(f"{where}: capabilities do not drop ALL (or add some)")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            fail(f"{where}: seccompProfile is {seccomp!r}")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{where}: readOnlyRootFilesystem is not true")
        if sc.get("privileged"):
            fail(f"{where}: privileged")
        if not any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", [])):
            fail(f"{where}: nothing mounted at /tmp")


def check_service_container(label, owner, component, spec, container, env, merged, release):
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports.get("admin") != merged["ports"]["admin"]:
        fail(f"{label}: {owner} has no admin port {merged['ports']['admin']}")
    for probe, path in (("startupProbe", "/healthz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("port") != "admin" or get.get("path") != path:
            fail(f"{label}: {owner}: {probe} is not GET {path} on the admin port")
    admin = f"0.0.0.0:{merged['ports']['admin']}"
    if component == "ingress":
        if env.get("CARRIER_ADMIN_ADDR", {}).get("value") != admin:
            fail(f"{label}: {owner}: CARRIER_ADMIN_ADDR is not {admin}")
        if env.get("CARRIER_HTTP_ADDR", {}).get("value") != f"0.0.0.0:{merged['ports']['public']}":
            fail(f"{label}: {owner}: CARRIER_HTTP_ADDR is not the public port")
        sleep = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        wanted = merged["services"]["ingress"]["preStopSleepSeconds"]
        if sleep != ["sleep", str(wanted)]:
            fail(f"{label}: {owner}: preStop is {sleep}, expected a sleep of {wanted} s")
        if spec["terminationGracePeriodSeconds"] <= wanted:
            fail(f"{label}: {owner}: terminationGracePeriodSeconds does not outlast the preStop sleep")
    elif env.get("CARRIER_HTTP_ADDR", {}).get("value") != admin:
        fail(f"{label}: {owner}: CARRIER_HTTP_ADDR is not {admin}")
    if component == "delivery":
        # hand-over (10 s) + drain of requests in flight (35 s).
        if spec["terminationGracePeriodSeconds"] < 45:
            fail(f"{label}: {owner}: terminationGracePeriodSeconds < 45 s cuts delivery's drain short")
        advertise = env.get("CARRIER_CONTROL_ADVERTISE_URL", {}).get("value", "")
        if not advertise.endswith(f"://$(POD_IP):{merged['ports']['control']}") or "POD_IP" not in env:
            fail(f"{label}: {owner}: CARRIER_CONTROL_ADVERTISE_URL is {advertise!r}")
    if component in ("ingress", "delivery"):
        scheme = "https" if merged["internalAuth"]["tls"]["enabled"] else "http"
        router_service = owner.removeprefix("Deployment/").rsplit("-", 1)[0] + "-router"
        wanted = f"{scheme}://{router_service}:{merged['ports']['grpc']}"
        if env.get("CARRIER_ROUTER_URL", {}).get("value") != wanted:
            fail(f"{label}: {owner}: CARRIER_ROUTER_URL is {env.get('CARRIER_ROUTER_URL')}, expected {wanted} (this release's router)")


def check_setup_job(label, owner, spec, merged):
    steps = [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]
    expected = (["topics"] if merged["topics"]["ensure"] else []) + (["migrate"] if merged["migrations"]["enabled"] else [])
    if steps != expected:
        fail(f"{label}: {owner} runs {steps}, expected {expected}")
    commands = {c["name"]: c["command"] for c in spec.get("initContainers", []) + spec["containers"]}
    if "topics" in commands and commands["topics"] != ["carrierctl", "admin", "topics", "ensure"]:
        fail(f"{label}: {owner}: the topics step runs {commands['topics']}")
    if "migrate" in commands and commands["migrate"] != ["carrierctl", "admin", "migrate"]:
        fail(f"{label}: {owner}: the migrate step runs {commands['migrate']}")
    for container in spec.get("initContainers", []) + spec["containers"]:
        if container["name"] != "topics":
            continue
        env = {e["name"]: e.get("value") for e in container["env"]}
        topics = merged["topics"]
        wanted = {
            "CARRIER_TOPICS__INBOUND_PARTITIONS": topics["partitions"]["inbound"],
            "CARRIER_TOPICS__DELIVERIES_PARTITIONS": topics["partitions"]["deliveries"],
            "CARRIER_TOPICS__LOG_EVENTS_PARTITIONS": topics["partitions"]["logEvents"],
            "CARRIER_TOPICS__NOTIFICATIONS_PARTITIONS": topics["partitions"]["notifications"],
            "CARRIER_TOPICS__REPLICATION_FACTOR": topics["replicationFactor"],
            "CARRIER_TOPICS__MIN_INSYNC_REPLICAS": topics["minInsyncReplicas"],
            "CARRIER_TOPICS__DELIVERIES_RETENTION_MS": topics["deliveriesRetentionMs"],
        }
        for name, value in wanted.items():
            if env.get(name) != str(int(value)):
                fail(f"{label}: {owner}: {name} is {env.get(name)!r}, expected {int(value)}")


def check_selectors_and_targets(label, by_kind, merged):
    deployments = by_kind.get("Deployment", {})
    pod_labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        if any(pod_labels[name].get(k) != v for k, v in selector.items()):
            fail(f"{label}: Deployment {name}: its selector does not match its pods")
        others = [other for other, lbls in pod_labels.items()
                  if other != name and all(lbls.get(k) == v for k, v in selector.items())]
        if others:
            fail(f"{label}: Deployment {name}'s selector also matches the pods of {others}")
    for name, service in by_kind.get("Service", {}).items():
        selector = service["spec"]["selector"]
        matched = [d for d, lbls in pod_labels.items() if all(lbls.get(k) == v for k, v in selector.items())]
        if len(matched) != 1:
            fail(f"{label}: Service {name} selects {matched}, expected exactly one Deployment")
            continue
        container_ports = {p["name"] for c in deployments[matched[0]]["spec"]["template"]["spec"]["containers"]
                           for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in container_ports:
                fail(f"{label}: Service {name} targets port {port['targetPort']!r}, which its pods do not name")
        component = service["metadata"]["labels"]["app.kubernetes.io/component"]
        names = {p["name"] for p in service["spec"]["ports"]}
        if name.endswith("-admin"):
            if names != {"admin"} or service["spec"].get("clusterIP") != "None":
                fail(f"{label}: Service {name} should be headless with the admin port only")
        elif component == "ingress" and names != {"http"}:
            fail(f"{label}: the public Service {name} publishes {sorted(names)}; only http belongs there")
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject"):
        for name, doc in by_kind.get(kind, {}).items():
            target = doc["spec"].get("scaleTargetRef", {}).get("name")
            if kind == "PodDisruptionBudget":
                selector = doc["spec"]["selector"]["matchLabels"]
                if not any(all(lbls.get(k) == v for k, v in selector.items()) for lbls in pod_labels.values()):
                    fail(f"{label}: PodDisruptionBudget {name} selects no pods")
            elif target not in deployments:
                fail(f"{label}: {kind} {name} targets {target!r}, not a Deployment of this release")
            elif "replicas" in deployments[target]["spec"]:
                fail(f"{label}: Deployment {target} sets replicas although {kind} {name} scales it")
    for name, scaled in by_kind.get("ScaledObject", {}).items():
        trigger = scaled["spec"]["triggers"][0]
        meta = trigger["metadata"]
        topic = merged["kafka"]["topicPrefix"] + "deliveries"
        group = merged["config"]["delivery"].get("consumer_group", "carrier-delivery")
        if trigger["type"] != "kafka" or meta["topic"] != topic or meta["consumerGroup"] != group:
            fail(f"{label}: ScaledObject {name}: trigger {trigger}, expected topic {topic} and group {group}")
        if scaled["spec"]["maxReplicaCount"] > merged["topics"]["partitions"]["deliveries"]:
            fail(f"{label}: ScaledObject {name}: maxReplicaCount above the deliveries partitions")
        if "scaleDown" not in scaled["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {}):
            fail(f"{label}: ScaledObject {name} has no scale-down behavior")
    for name, monitor in by_kind.get("ServiceMonitor", {}).items():
        if [e["port"] for e in monitor["spec"]["endpoints"]] != ["admin"]:
            fail(f"{label}: ServiceMonitor {name} does not scrape the admin port")
        # The rules and dashboards select job="carrier-<service>" (docs/metrics.md).
        component = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        relabelings = monitor["spec"]["endpoints"][0].get("relabelings", [])
        if not any(r.get("targetLabel") == "job" and r.get("replacement") == f"carrier-{component}" for r in relabelings):
            fail(f"{label}: ServiceMonitor {name} does not set job carrier-{component}")
        if not any(r.get("action") == "labeldrop" and r.get("regex") == "service" for r in relabelings):
            fail(f"{label}: ServiceMonitor {name} keeps the operator's service label (Carrier's own would become exported_service)")
    for name, hook in list(by_kind.get("Job", {}).items()):
        annotations = hook["metadata"].get("annotations", {})
        if annotations.get("helm.sh/hook") != "pre-install,pre-upgrade" or "before-hook-creation" not in annotations.get("helm.sh/hook-delete-policy", ""):
            fail(f"{label}: Job {name} is not a pre-install,pre-upgrade hook deleted before the next one")


def check_config_maps(label, by_kind, merged):
    """Every carrier.toml parses as TOML, numbers stay integers, and no secret is in it."""
    secret_keys = {"admin_token", "token_signing_key", "accepted_token_signing_keys", "database_url",
                   "service_token", "password", "username", "redis_url"}
    for name, config_map in by_kind.get("ConfigMap", {}).items():
        for key, text in config_map.get("data", {}).items():
            if not key.endswith(".toml"):
                continue
            try:
                parsed = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                fail(f"{label}: ConfigMap {name} {key} is not TOML: {error}")
                continue
            stack = [("", parsed)]
            while stack:
                path, table = stack.pop()
                for field, value in table.items():
                    if isinstance(value, dict):
                        stack.append((f"{path}{field}.", value))
                    elif isinstance(value, float):
                        fail(f"{label}: {name} {key}: {path}{field} = {value} is a float")
                    elif field in secret_keys:
                        fail(f"{label}: {name} {key}: {path}{field} is a secret in a ConfigMap")
            kafka = parsed.get("kafka", {})
            if kafka.get("brokers") != merged["kafka"]["brokers"] or kafka.get("topic_prefix") != merged["kafka"]["topicPrefix"]:
                fail(f"{label}: {name} {key}: [kafka] is {kafka}")


# Values documented as a whole in the chart's README (their fields are Kubernetes' own).
WHOLE_VALUES = {"resources", "podSecurityContext", "containerSecurityContext", "behavior",
                "adminNamespaceSelector", "startup", "readiness", "liveness", "labels"}


def check_readme(chart_dir: Path, defaults: dict) -> None:
    """Every value of values.yaml has a row in the chart's README."""
    readme = (chart_dir / "README.md").read_text()
    missing = []

    def walk(node: dict, path: str) -> None:
        for key, value in node.items():
            full = f"{path}.{key}" if path else key
            if isinstance(value, dict) and value and key not in WHOLE_VALUES:
                walk(value, full)
                continue
            row = f"| `{full}` |" in readme
            if full.startswith("services.") and not row:
                # The per-service table names the key without services.<name>.
                row = f"| `{full.split('.', 2)[2]}` |" in readme
            if not row:
                missing.append(full)

    walk(defaults, "")
    for full in missing:
        fail(f"helm/carrier/README.md has no row for the value {full}")
    if not missing:
        ok("helm/carrier/README.md documents every value of values.yaml")


def chart_checks(chart_dir: Path) -> None:
    chart = Chart(chart_dir)
    check_readme(chart_dir, chart.defaults)
    ci_files = sorted((chart_dir / "ci").glob("*.yaml"))
    cases: list[tuple[str, dict | None]] = [("defaults", None)]
    for path in ci_files:
        cases.append((f"ci/{path.name}", yaml.safe_load(path.read_text()) or {}))

    # (a) Helm's lint (strict: warnings count), with the defaults and each example values file.
    for label, values in cases:
        report = chart.lint(values)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        for message in problems:
            fail(f"helm lint ({label}): {message['path']}: {message['error'].strip()}")
        for error in report.get("errors", []):
            if not any(error.strip() in m["error"] for m in problems):
                fail(f"helm lint ({label}): {error.strip()}")
        if not problems and not report.get("errors"):
            infos = "; ".join(m["error"] for m in report["messages"]) or "no messages"
            ok(f"helm lint --strict ({label}): clean ({infos})")

    # (b) values.schema.json: a draft-07 schema; the defaults and each example file (merged over
    # the defaults, as Helm validates them) pass; bad values are refused by it and by Helm.
    validator_class = jsonschema.Draft7Validator
    try:
        validator_class.check_schema(chart.schema)
    except jsonschema.SchemaError as error:
        fail(f"values.schema.json is not a valid draft-07 schema: {error.message}")
        return
    validator = validator_class(chart.schema)
    for label, values in cases:
        merged = deep_merge(chart.defaults, values or {})
        errors = sorted(validator.iter_errors(merged), key=lambda e: list(e.path))
        for error in errors:
            fail(f"schema ({label}): /{'/'.join(map(str, error.path))}: {error.message}")
        if not errors:
            ok(f"values.schema.json accepts {label}")
    bad_values = {
        "an unknown key (services.ingress.replica)": {"services": {"ingress": {"replica": 3}}},
        "a key of the old chart (databaseUrl)": {"databaseUrl": "postgres://x"},
        "a string for replicas": {"services": {"delivery": {"replicas": "two"}}},
        "logFormat xml": {"logFormat": "xml"},
        "a short admin token": {"auth": {"adminToken": "short"}},
        "partitions 0": {"topics": {"partitions": {"deliveries": 0}}},
        "an unknown service": {"services": {"scheduler": {"replicas": 1}}},
    }
    for what, values in bad_values.items():
        merged = deep_merge(chart.defaults, values)
        if validator.is_valid(merged):
            fail(f"values.schema.json accepts {what}")
        report = chart.lint(values)
        if not report.get("errors"):
            fail(f"helm lint accepts {what}")
        else:
            ok(f"bad values refused by the schema and by helm lint: {what}")

    # (c) Rendering (what `helm template` prints), for two releases in one namespace.
    renders: dict[str, dict[str, set[tuple[str, str]]]] = {}
    for label, values in cases:
        merged = chart.merged(values)
        failures_before = len(FAILURES)
        for release in ("alpha", "beta"):
            try:
                rendered = chart.render(values, name=release)
            except chart.helm.HelmError as error:
                fail(f"render ({label}, release {release}): {error}")
                continue
            by_kind = check_render(f"{label} [{release}]", values or {}, merged, rendered, release)
            renders.setdefault(label, {})[release] = {(k, n) for k, names in by_kind.items() for n in names}
        pair = renders.get(label, {})
        if len(pair) == 2:
            shared = pair["alpha"] & pair["beta"]
            if shared:
                fail(f"render ({label}): releases alpha and beta in one namespace both create {sorted(shared)}")
            elif len(FAILURES) == failures_before:
                ok(f"render ({label}): {len(pair['alpha'])} resources per release, every check passed, "
                   f"no name shared by releases alpha and beta")

    # The longest release name Helm accepts (53) still gives valid names.
    long_release = "r" * 53
    try:
        check_render("defaults [53-character release]", {}, chart.merged({}), chart.render({}, name=long_release), long_release)
        ok("render with a 53-character release name: every name valid")
    except chart.helm.HelmError as error:
        fail(f"render with a 53-character release name: {error}")

    # What the templates themselves refuse.
    refusals = {
        "KEDA maxReplicaCount above the deliveries partitions": (
            {"services": {"delivery": {"autoscaling": {"enabled": True, "maxReplicaCount": 65}}}},
            "larger than topics.partitions.deliveries"),
        "a secret in config": ({"config": {"ingress": {"admin_token": "x" * 20}}}, "is a secret"),
        "a nested secret in config": ({"config": {"notifier": {"smtp": {"password": "x"}}}}, "is a secret"),
        "no database URL": ({"database": {"url": ""}}, "database"),
        "brokers in config": ({"config": {"common": {"kafka": {"brokers": "elsewhere:9092"}}}}, "kafka.brokers"),
    }
    for what, (values, needle) in refusals.items():
        try:
            chart.render(values, name="alpha")
            fail(f"render accepts {what}")
        except chart.helm.HelmError as error:
            if needle not in str(error):
                fail(f"render refuses {what}, but with {error}")
            else:
                ok(f"render refuses {what}: {str(error).split(': ', 1)[-1][:110]}")


# ----------------------------------------------------------------------------- compose

def compose_checks(config_path: Path) -> None:
    """Checks the resolved file `docker-compose config` printed."""
    config = yaml.safe_load(config_path.read_text())
    services = config.get("services", {})
    carrier = {"ingress", "router", "delivery", "notifier"}
    for name in sorted(carrier | {"kafka", "postgres", "redis", "carrier-init"}):
        if name not in services:
            fail(f"compose: no service {name}")
    for name, service in services.items():
        if name != "carrier-init" and "healthcheck" not in service:
            fail(f"compose: service {name} has no healthcheck")
    init = services.get("carrier-init", {})
    init_command = " ".join(init.get("command", []) if isinstance(init.get("command"), list) else [init.get("command", "")])
    if "carrierctl admin topics ensure" not in init_command or "carrierctl admin migrate" not in init_command:
        fail(f"compose: carrier-init does not run topics ensure and migrate: {init_command!r}")
    for name in sorted(carrier):
        depends = services.get(name, {}).get("depends_on", {})
        if not isinstance(depends, dict):
            fail(f"compose: {name}'s depends_on has no conditions")
            continue
        wanted = {"carrier-init": "service_completed_successfully", "kafka": "service_healthy", "postgres": "service_healthy"}
        if name == "ingress":
            wanted["redis"] = "service_healthy"
            wanted["router"] = "service_healthy"
        if name == "delivery":
            wanted["router"] = "service_healthy"
        for dependency, condition in wanted.items():
            if depends.get(dependency, {}).get("condition") != condition:
                fail(f"compose: {name} does not wait for {dependency} ({condition})")
        env = services.get(name, {}).get("environment", {})
        if name != "notifier" and len(env.get("CARRIER_INTERNAL_AUTH__SERVICE_TOKEN", "")) < 32:
            fail(f"compose: {name} lacks the internal service token")
        if name == "notifier" and "CARRIER_INTERNAL_AUTH__SERVICE_TOKEN" in env:
            fail("compose: the notifier gets the internal service token it does not use")
        if name != "ingress" and ({"CARRIER_ADMIN_TOKEN", "CARRIER_TOKEN_SIGNING_KEY"} & set(env)):
            fail(f"compose: {name} gets ingress's operator token or signing key")
    kafka_image = services.get("kafka", {}).get("image", "")
    if not re.match(r"^apache/kafka:(3\.9\.\d+|4\.\d+\.\d+)$", kafka_image):
        fail(f"compose: kafka image {kafka_image!r} is not apache/kafka 3.9.x or 4.x")
    if not FAILURES:
        ok(f"docker-compose config: {len(services)} services, healthchecks and start-up order as required")



# ----------------------------------------------------------------------- observability

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy/prometheus/carrier-rules.yml"
PROMETHEUS_RULE = REPO / "deploy/prometheus/carrier-prometheusrule.yaml"
RULE_TESTS = REPO / "deploy/prometheus/tests"
DASHBOARDS = REPO / "deploy/grafana/dashboards"
RUNBOOKS = REPO / "docs/runbooks"
METRICS_DOC = REPO / "docs/metrics.md"

# Metrics the rules, dashboards and docs/metrics.md may use before the Rust code registers them
# (a rule written ahead of its metric); none now.
PENDING_METRICS: set = set()
# Series that are not Carrier's own: the process collector's and Prometheus's.
FOREIGN_METRICS = {"up", "ALERTS", "process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_open_fds", "process_start_time_seconds"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
REGISTRATION = re.compile(r'\b(?:counter_vec|gauge_vec|float_gauge_vec|histogram_vec)\(\s*"(carrier_[a-z0-9_]+)"')
METRIC_IN_EXPR = re.compile(r'(?<![\w:"])(carrier_[a-z0-9_]+|process_[a-z_]+|up|ALERTS)(?=\s*[{\[)]|\s*$|\s+(?:offset|unless|and|or|>|<|==|/|\*|-|\+))')


def promtool(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool, *args], capture_output=True, text=True)


def metric_names(expr: str) -> set[str]:
    names = set()
    for name in METRIC_IN_EXPR.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.startswith("carrier_") and name.endswith(suffix) and name.removesuffix(suffix).endswith("_seconds"):
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def observability_checks(tool: str) -> None:
    version = promtool(tool, "--version").stdout.splitlines()[0] if promtool(tool, "--version").returncode == 0 else "?"

    # One source of truth: the PrometheusRule, the chart's copies and the dashboards are what
    # their generators write.
    for generator in ("deploy/prometheus/generate.py", "deploy/grafana/generate.py"):
        run = subprocess.run([sys.executable, str(REPO / generator), "--check"], capture_output=True, text=True)
        if run.returncode != 0:
            fail(f"{generator} --check: {run.stderr.strip()}")
        else:
            ok(f"{generator} --check: the generated files are up to date")

    # promtool check rules: the plain file, and the PrometheusRule's spec as a rules file.
    plain = yaml.safe_load(RULES.read_text())
    operator = yaml.safe_load(PROMETHEUS_RULE.read_text())
    if operator.get("apiVersion") != "monitoring.coreos.com/v1" or operator.get("kind") != "PrometheusRule":
        fail(f"{PROMETHEUS_RULE.name} is not a monitoring.coreos.com/v1 PrometheusRule")
    if operator.get("spec", {}).get("groups") != plain["groups"]:
        fail(f"{PROMETHEUS_RULE.name} holds other groups than {RULES.name}")
    with tempfile.TemporaryDirectory() as work:
        spec = Path(work) / "prometheusrule-spec.yml"
        spec.write_text(yaml.safe_dump(operator.get("spec", {})))
        for label, path in ((RULES.name, RULES), (f"{PROMETHEUS_RULE.name} (its spec)", spec)):
            run = promtool(tool, "check", "rules", str(path))
            if run.returncode != 0:
                fail(f"promtool check rules {label}: {(run.stdout + run.stderr).strip()}")
            else:
                ok(f"promtool check rules {label}: {run.stdout.strip().splitlines()[-1].strip()} ({version})")

    # promtool test rules, and every alert has a test that fires it and one that keeps it quiet.
    tests = sorted(RULE_TESTS.glob("*.yml"))
    run = promtool(tool, "test", "rules", *map(str, tests))
    if run.returncode != 0:
        fail(f"promtool test rules: {(run.stdout + run.stderr).strip()}")
    else:
        ok(f"promtool test rules: {len(tests)} files pass ({', '.join(t.name for t in tests)})")
    alerts = {rule["alert"]: rule for group in plain["groups"] for rule in group["rules"] if "alert" in rule}
    fired, quiet = set(), set()
    for path in tests:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    for name in sorted(alerts):
        if name not in fired:
            fail(f"alert {name} has no test that fires it (deploy/prometheus/tests)")
        if name not in quiet:
            fail(f"alert {name} has no test that shows it quiet (deploy/prometheus/tests)")
    if fired >= set(alerts) and quiet >= set(alerts):
        ok(f"every one of the {len(alerts)} alerts has a test that fires it and one that keeps it quiet")

    # Every alert: severity, summary, description, and a runbook_url naming its page.
    metrics_doc = METRICS_DOC.read_text()
    runbook_index = (RUNBOOKS / "README.md").read_text() if (RUNBOOKS / "README.md").exists() else ""
    if not runbook_index:
        fail("docs/runbooks/README.md is missing")
    for name, rule in sorted(alerts.items()):
        annotations = rule.get("annotations", {})
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            fail(f"alert {name}: severity is not critical, warning or info")
        for key in ("summary", "description", "runbook_url"):
            if not annotations.get(key):
                fail(f"alert {name} has no {key}")
        url = annotations.get("runbook_url", "")
        if url != f"docs/runbooks/{name}.md":
            fail(f"alert {name}: runbook_url {url!r} is not docs/runbooks/{name}.md")
        elif not (REPO / url).is_file():
            fail(f"alert {name}: its runbook {url} does not exist")
        else:
            page = (REPO / url).read_text()
            for heading in ("## Meaning", "## Impact", "## First checks", "## Fix"):
                if heading not in page:
                    fail(f"{url} has no '{heading}' section")
        if f"({name}.md)" not in runbook_index:
            fail(f"docs/runbooks/README.md does not link {name}.md")
        if f"runbooks/{name}.md" not in metrics_doc:
            fail(f"docs/metrics.md does not list the alert {name}")
    for page in sorted(RUNBOOKS.glob("*.md")):
        if page.name != "README.md" and page.stem not in alerts:
            fail(f"docs/runbooks/{page.name} is the runbook of no alert")
    ok(f"every alert has a severity, summary, description and a runbook in docs/runbooks/ ({len(alerts)} pages)")

    # The dashboards: JSON Grafana takes, and PromQL promtool parses (as recording rules, with
    # Grafana's variables given values).
    used: dict[str, set[str]] = {}
    for group in plain["groups"]:
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]):
                used.setdefault(name, set()).add(RULES.name)
    exprs = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        try:
            board = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            fail(f"{path.name} is not JSON: {error}")
            continue
        variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
        if variables.get("datasource", {}).get("type") != "datasource":
            fail(f"{path.name} has no datasource variable")
        if not 36 <= board.get("schemaVersion", 0) <= 41 or not board.get("uid") or not board.get("title"):
            fail(f"{path.name}: schemaVersion {board.get('schemaVersion')}, uid and title expected")
        ids = [p["id"] for p in board.get("panels", [])]
        if len(ids) != len(set(ids)):
            fail(f"{path.name}: panel ids are not unique")
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                expr = (target["expr"].replace("$__rate_interval", "5m").replace('"$instance"', '".*"')
                        .replace("$instance", ".*"))
                if "$" in expr:
                    fail(f"{path.name}: panel {panel['title']!r} uses an unknown variable: {target['expr']}")
                exprs.append((path.name, panel["title"], expr))
                for name in metric_names(expr):
                    used.setdefault(name, set()).add(path.name)
    with tempfile.TemporaryDirectory() as work:
        rules = Path(work) / "dashboards.yml"
        rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": [
            {"record": f"dashboard:expr_{i}", "expr": expr} for i, (_, _, expr) in enumerate(exprs)]}]}))
        run = promtool(tool, "check", "rules", str(rules))
        if run.returncode != 0:
            fail(f"the dashboards' PromQL does not parse: {(run.stdout + run.stderr).strip()}")
        else:
            ok(f"{len(list(DASHBOARDS.glob('*.json')))} dashboards parse; their {len(exprs)} queries parse (promtool)")

    # Every metric used is documented; every metric the Rust code registers is documented; every
    # Carrier metric documented is registered (or pending).
    documented = set(re.findall(r"^\| `([a-zA-Z_:][a-zA-Z0-9_:]*)` \|", metrics_doc, re.M))
    for name, where in sorted(used.items()):
        if name not in documented:
            fail(f"{name} (used in {', '.join(sorted(where))}) is not in docs/metrics.md")
    registered = set()
    for path in list(REPO.glob("services/**/*.rs")) + list(REPO.glob("crates/**/*.rs")) + list(REPO.glob("tools/**/*.rs")):
        registered |= set(REGISTRATION.findall(path.read_text()))
    if len(registered) < 30:
        fail(f"found only {len(registered)} metric registrations in the Rust code: has the registration pattern changed?")
    for name in sorted(registered - documented):
        fail(f"{name} is registered in the Rust code but not in docs/metrics.md")
    for name in sorted(documented - registered - FOREIGN_METRICS):
        if name not in PENDING_METRICS:
            fail(f"docs/metrics.md lists {name}, which the Rust code does not register")
    for name in sorted(PENDING_METRICS & registered):
        print(f"check-deploy: note: {name} is registered now: remove it from PENDING_METRICS", file=sys.stderr)
    if not [m for m in FAILURES if "docs/metrics.md" in m]:
        ok(f"docs/metrics.md lists the {len(used)} metrics the rules and dashboards use and the {len(registered)} "
           f"the code registers ({len(PENDING_METRICS - registered)} pending)")

def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("chart", "compose", "observability"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "chart":
        chart_checks(Path(sys.argv[2]))
    elif sys.argv[1] == "observability":
        observability_checks(sys.argv[2])
    else:
        compose_checks(Path(sys.argv[2]))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
