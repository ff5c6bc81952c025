#!/usr/bin/env python3
"""Writes Carrier's Grafana dashboards (deploy/grafana/dashboards/*.json) and the Helm chart's copy.

The dashboards are written as code here, so that the five stay alike (variables, units, the
fleet aggregation) and a metric renamed in one place is renamed everywhere; the JSON files are
what Grafana imports (Dashboards → New → Import, or the chart's ConfigMap for Grafana's sidecar:
grafanaDashboards.enabled). The chart ships a copy in helm/carrier/files/dashboards/ (Helm cannot
read files outside the chart, and does not follow symlinks when packaging).

    python3 deploy/grafana/generate.py           # rewrite every dashboard
    python3 deploy/grafana/generate.py --check   # exit 1 if one differs (make test runs it)

Standard library only. Metrics: docs/metrics.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT_DIRS = (HERE / "dashboards", REPO / "helm" / "carrier" / "files" / "dashboards")

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The labels naming one process, dropped for fleet figures (as in deploy/prometheus/carrier-rules.yml).
PER_PROCESS = "instance, pod, container, endpoint"


class Dashboard:
    def __init__(self, uid: str, title: str, description: str, job: str | None):
        self.uid, self.title, self.description, self.job = uid, title, description, job
        self.panels: list[dict] = []
        self.x = self.y = 0
        self.row_height = 0
        self.next_id = 1

    def sel(self, extra: str = "") -> str:
        """The label selector of this dashboard's job and chosen instances."""
        parts = [f'job="{self.job}"', 'instance=~"$instance"'] if self.job else []
        if extra:
            parts.append(extra)
        return "{" + ", ".join(parts) + "}"

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def panel(self, kind: str, title: str, description: str, targets: list[tuple[str, str]],
              unit: str = "short", width: int = 12, height: int = 8, **options) -> None:
        if self.x + width > 24:
            self._newline()
        panel = {
            "id": self._id(),
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                 "legendFormat": legend, "range": kind != "table", "instant": kind == "table"}
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
        }
        if kind == "timeseries":
            panel["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1,
                                                          "fillOpacity": 10, "showPoints": "never",
                                                          "stacking": {"mode": options.get("stack", "none")}}
            panel["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                           "calcs": ["lastNotNull", "max"]},
                                "tooltip": {"mode": "multi", "sort": "desc"}}
        elif kind == "stat":
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                "colorMode": "background", "graphMode": "area", "textMode": "auto"}
            steps = [{"color": "green", "value": None}]
            for value, color in options.get("thresholds", []):
                steps.append({"color": color, "value": value})
            panel["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": steps}
            panel["fieldConfig"]["defaults"]["color"] = {"mode": "thresholds"}
        elif kind == "table":
            panel["options"] = {"showHeader": True}
            panel["transformations"] = options.get("transformations", [])
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def json(self) -> dict:
        variables = [{
            "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [],
        }]
        if self.job:
            variables.append({
                "name": "instance", "label": "Instance", "type": "query", "datasource": DATASOURCE,
                "definition": f'label_values(up{{job="{self.job}"}}, instance)',
                "query": {"query": f'label_values(up{{job="{self.job}"}}, instance)', "refId": "instance"},
                "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "hide": 0, "sort": 1, "regex": "", "options": [],
            })
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["carrier"],
            "timezone": "utc",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "annotations": {"list": []},
            "links": [{"type": "dashboards", "title": "Carrier", "tags": ["carrier"], "asDropdown": True,
                       "includeVars": False, "keepTime": True, "icon": "external link", "targetBlank": False,
                       "tooltip": "", "url": ""}],
            "templating": {"list": variables},
            "panels": self.panels,
        }


def quantiles(metric: str, selector: str, by: str = "") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    legend = "{{" + by + "}} " if by else ""
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{selector}[$__rate_interval])))",
             f"{legend}p{int(q * 100)}") for q in (0.5, 0.9, 0.99)]


def consumer_rows(d: Dashboard, topic: str) -> None:
    d.row(f"Consuming {topic}")
    s = d.sel(f'topic="{topic}"')
    d.panel("timeseries", "Lag by partition",
            f"Records of {topic} not yet read, per partition (the highest any member reports).",
            [(f"max by (partition) (carrier_consumer_lag_records{s})", "partition {{partition}}")], stack="normal")
    d.panel("timeseries", "Partitions owned, per member",
            "Partitions each member holds a lease of, against the partitions of the topic. A gap between "
            "the two lines is partitions nobody reads (alert CarrierPartitionsUnowned).",
            [(f"carrier_consumer_partitions_owned{s}", "{{instance}}"),
             (f"max(carrier_consumer_topic_partitions{s})", "partitions of the topic"),
             (f"max(carrier_consumer_group_members{s})", "live members")])
    d.panel("timeseries", "Leases lost and lease errors",
            "Leases lost while working (work in flight abandoned, redone by the next owner), and failed "
            "lease steps (Postgres unreachable or slow), in each interval.",
            [(f"sum by (instance) (increase(carrier_consumer_leases_lost_total{s}[$__rate_interval]))", "lost {{instance}}"),
             (f"sum by (step) (increase(carrier_consumer_lease_errors_total{s}[$__rate_interval]))", "error {{step}}")],
            unit="short", width=8)
    d.panel("timeseries", "Instance duplicates",
            "Other live processes claiming a member's kafka.instance_id (should be 0).",
            [(f"carrier_consumer_instance_duplicates{s}", "{{instance}}")], width=8)
    d.panel("timeseries", "Out of range, streams replaced",
            "Partitions whose position fell outside them (records deleted unread) and whose stream was "
            "replaced (topic recreated), in each interval.",
            [(f"sum(increase(carrier_consumer_out_of_range_total{s}[$__rate_interval]))", "out of range"),
             (f"sum(increase(carrier_consumer_stream_generations_total{s}[$__rate_interval]))", "stream replaced")],
            width=8)


def process_row(d: Dashboard) -> None:
    d.row("Processes")
    s = d.sel()
    d.panel("timeseries", "CPU", "CPU seconds per second, per process.",
            [(f"rate(process_cpu_seconds_total{s}[$__rate_interval])", "{{instance}}")], unit="percentunit", width=8)
    d.panel("timeseries", "Resident memory", "Resident set size per process.",
            [(f"process_resident_memory_bytes{s}", "{{instance}}")], unit="bytes", width=8)
    d.panel("timeseries", "Open file descriptors", "Open file descriptors (sockets included) per process.",
            [(f"process_open_fds{s}", "{{instance}}")], width=8)
    d.panel("table", "Builds", "Which version and commit each process runs, and since when.",
            [(f"max by (instance, version, commit) (carrier_build_info{s})", ""),
             (f"max by (instance) (process_start_time_seconds{s}) * 1000", "")],
            width=24, height=6,
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize", "options": {"excludeByName": {"Time": True, "Value #A": True},
                                                            "renameByName": {"Value #B": "started"}}}])


def overview() -> Dashboard:
    d = Dashboard("carrier-overview", "Carrier / Overview",
                  "The whole pipeline at a glance: what is stuck, since when, and which stage. Stage "
                  "dashboards: the Carrier menu above.", None)
    fleet = f"without ({PER_PROCESS})"
    d.row("Now")
    d.panel("stat", "Failing destinations", "Production destinations whose head keeps failing; their later "
            "messages wait. Which ones: SELECT * FROM destination_queues WHERE reason = 'failing'.",
            [('sum(carrier_delivery_held_destinations{job="carrier-delivery", reason="failing"})', "")],
            width=4, height=4, thresholds=[(1, "orange")])
    d.panel("stat", "Oldest failing head", "Age of the oldest held head that keeps failing.",
            [('max(carrier_delivery_oldest_held_seconds{job="carrier-delivery", reason="failing"})', "")],
            unit="s", width=4, height=4, thresholds=[(600, "orange"), (3600, "red")])
    d.panel("stat", "Paused by operators", "Destinations paused by an operator.",
            [('sum(carrier_delivery_held_destinations{job="carrier-delivery", reason="operator"})', "")],
            width=4, height=4, thresholds=[(1, "blue")])
    d.panel("stat", "Routing halted", "Partitions of carrier.inbound whose routing is halted (critical).",
            [('sum(carrier_router_halted_partitions{job="carrier-router"})', "")],
            width=4, height=4, thresholds=[(1, "red")])
    d.panel("stat", "Ingress 5xx", "Share of inbound messages answered 5xx over 5 minutes.",
            [('sum(rate(carrier_ingress_requests_total{job="carrier-ingress", status=~"5.."}[5m])) / '
              'sum(rate(carrier_ingress_requests_total{job="carrier-ingress"}[5m]))', "")],
            unit="percentunit", width=4, height=4, thresholds=[(0.01, "orange"), (0.05, "red")])
    d.panel("stat", "Parked tasks", "Tasks in the parking store (the backlog of held destinations).",
            [('sum(carrier_delivery_parked_tasks{job="carrier-delivery"})', "")],
            width=4, height=4, thresholds=[(10000, "orange")])
    d.panel("table", "Firing Carrier alerts", "Every Carrier alert firing now; each has a runbook in "
            "docs/runbooks/<alert>.md.",
            [('ALERTS{alertname=~"Carrier.*", alertstate="firing"}', "")], width=16, height=7,
            transformations=[{"id": "labelsToFields", "options": {}},
                             {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True}}}])
    d.panel("stat", "Targets up", "Scrape targets up per stage.",
            [('sum by (job) (up{job=~"carrier-(ingress|router|delivery|notifier)"})', "{{job}}")],
            width=8, height=7, thresholds=[])
    d.row("Pipeline")
    d.panel("timeseries", "Inbound messages by status", "Messages sent to ingress per second, by HTTP status.",
            [('sum by (status) (rate(carrier_ingress_requests_total{job="carrier-ingress"}[$__rate_interval]))', "{{status}}")],
            unit="reqps", stack="normal")
    d.panel("timeseries", "Consumer lag by topic", "Records not yet read per topic (each partition counted once).",
            [(f'sum by (job, topic) (max {fleet} (carrier_consumer_lag_records{{job=~"carrier-.*"}}))', "{{topic}} ({{job}})")])
    d.panel("timeseries", "Held destinations by reason", "failing: a production head keeps failing; "
            "operator: paused.",
            [('sum by (reason) (carrier_delivery_held_destinations{job="carrier-delivery"})', "{{reason}}")])
    d.panel("timeseries", "Oldest held head", "Age of the oldest held head of the fleet, by reason.",
            [('max by (reason) (carrier_delivery_oldest_held_seconds{job="carrier-delivery"})', "{{reason}}")], unit="s")
    d.panel("timeseries", "Delivery attempts by status class", "HTTP attempts per second by the receiver's answer.",
            [('sum by (status_class) (rate(carrier_delivery_attempts_total{job="carrier-delivery"}[$__rate_interval]))', "{{status_class}}")],
            unit="reqps", stack="normal")
    d.panel("timeseries", "Durable write p99 by stage", "The slowest 1 % of each stage's durable writes.",
            [(f'histogram_quantile(0.99, sum by (le) (rate({m}_bucket{{job="{job}"}}[$__rate_interval])))', label)
             for m, job, label in (("carrier_ingress_durable_write_seconds", "carrier-ingress", "ingress"),
                                   ("carrier_router_write_seconds", "carrier-router", "router"),
                                   ("carrier_notifier_write_seconds", "carrier-notifier", "notifier"))],
            unit="s")
    d.panel("timeseries", "Alert sends by outcome", "Failing/recovered alerts sent to organisations, per minute.",
            [('sum by (channel, outcome) (rate(carrier_notifier_alert_sends_total{job="carrier-notifier"}[$__rate_interval])) * 60', "{{channel}} {{outcome}}")])
    d.panel("timeseries", "Processes up by stage", "Scrape targets up per stage.",
            [('sum by (job) (up{job=~"carrier-(ingress|router|delivery|notifier)"})', "{{job}}")])
    return d


def ingress() -> Dashboard:
    d = Dashboard("carrier-ingress", "Carrier / Ingress", "The HTTP API: inbound messages, overload "
                  "protection, rate limiting, idempotency, manual retries.", "carrier-ingress")
    s = d.sel()
    five_xx = d.sel('status=~"5.."')
    d.row("Inbound messages")
    d.panel("timeseries", "Requests by status", "Inbound messages (Data Model and FHIR API) per second by status.",
            [(f"sum by (status) (rate(carrier_ingress_requests_total{s}[$__rate_interval]))", "{{status}}")],
            unit="reqps", stack="normal")
    d.panel("timeseries", "Requests by API, 5xx share", "Per API, and the share answered 5xx.",
            [(f"sum by (api) (rate(carrier_ingress_requests_total{s}[$__rate_interval]))", "{{api}}"),
             (f"sum(rate(carrier_ingress_requests_total{five_xx}[$__rate_interval])) / "
              f"sum(rate(carrier_ingress_requests_total{s}[$__rate_interval]))", "5xx share")],
            unit="short")
    d.panel("timeseries", "Durable write latency", "From request to the broker's acknowledgement (accepted messages).",
            quantiles("carrier_ingress_durable_write_seconds", s), unit="s")
    d.panel("timeseries", "Idempotency-Key outcomes", "Requests with an Idempotency-Key by outcome.",
            [(f"sum by (outcome) (rate(carrier_ingress_idempotency_total{s}[$__rate_interval]))", "{{outcome}}")], unit="reqps")
    d.row("Overload protection")
    d.panel("timeseries", "In flight and connections", "Requests in progress, HTTP connections open and the adaptive limit on message writes, per replica.",
            [(f"carrier_ingress_requests_in_flight{s}", "in flight {{instance}}"),
             (f"carrier_ingress_connections_open{s}", "connections {{instance}}"),
             (f"carrier_ingress_admission_limit{s}", "admission limit {{instance}}")], width=8)
    d.panel("timeseries", "Shed requests by cap", "Requests answered 503 at once because a cap was reached.",
            [(f"sum by (cap) (rate(carrier_ingress_requests_shed_total{s}[$__rate_interval]))", "{{cap}}")], unit="reqps", width=8)
    d.panel("timeseries", "Timeouts and connection limit", "Requests ended by a deadline (body: 408, request: 504), "
            "and times every connection slot was taken.",
            [(f"sum by (phase) (rate(carrier_ingress_request_timeouts_total{s}[$__rate_interval]))", "timeout {{phase}}"),
             (f"sum(rate(carrier_ingress_connection_limit_reached_total{s}[$__rate_interval]))", "connection limit")],
            unit="reqps", width=8)
    d.row("Rate limiting and retries")
    d.panel("timeseries", "Rate-limit decisions", "allowed, limited (429) or unlimited (Redis unreachable: fail open).",
            [(f"sum by (decision) (rate(carrier_ingress_rate_limit_decisions_total{s}[$__rate_interval]))", "{{decision}}"),
             (f"sum(rate(carrier_ingress_rate_limited_total{s}[$__rate_interval]))", "429 (rate_limited_total)")],
            unit="reqps", width=8)
    d.panel("timeseries", "Rate limiter unavailable", "Requests let through unlimited, by reason.",
            [(f"sum by (reason) (rate(carrier_ingress_rate_limit_unavailable_total{s}[$__rate_interval]))", "{{reason}}")],
            unit="reqps", width=8)
    d.panel("timeseries", "Manual retry failures", "Manual retries that could not be queued, by reason.",
            [(f"sum by (reason) (increase(carrier_ingress_manual_retry_failures_total{s}[$__rate_interval]))", "{{reason}}")], width=8)
    process_row(d)
    return d


def router() -> Dashboard:
    d = Dashboard("carrier-router", "Carrier / Router", "Fan-out of carrier.inbound to one delivery task per "
                  "destination, and the configuration service.", "carrier-router")
    s = d.sel()
    d.row("Routing")
    d.panel("timeseries", "Records by outcome", "Inbound records per second: routed, failed (read again), undecodable (skipped).",
            [(f"sum by (outcome) (rate(carrier_router_records_total{s}[$__rate_interval]))", "{{outcome}}")],
            unit="reqps", stack="normal", width=8)
    d.panel("timeseries", "Halted partitions", "Partitions of carrier.inbound whose routing is halted after a "
            "write failed for good (alert CarrierRouterHalted).",
            [(f"carrier_router_halted_partitions{s}", "{{instance}}")], width=8)
    d.panel("timeseries", "Task write latency", "Durable writes of delivery tasks and log events.",
            quantiles("carrier_router_write_seconds", s), unit="s", width=8)
    d.panel("timeseries", "Internal auth refusals", "gRPC calls to the configuration service refused for want of "
            "the service token, by reason.",
            [(f"sum by (reason) (increase(carrier_internal_auth_refused_total{s}[$__rate_interval]))", "{{reason}}")])
    consumer_rows(d, "carrier.inbound")
    process_row(d)
    return d


def delivery() -> Dashboard:
    d = Dashboard("carrier-delivery", "Carrier / Delivery", "Per-destination FIFO lanes: held destinations, "
                  "parking, attempts, outbound policy, queue control.", "carrier-delivery")
    s = d.sel()
    d.row("Held destinations")
    d.panel("timeseries", "Held destinations by reason", "failing: a production head keeps failing (its queue "
            "waits); operator: paused. Which ones: SELECT * FROM destination_queues ORDER BY held_since.",
            [(f"sum by (reason) (carrier_delivery_held_destinations{s})", "{{reason}}")], width=8)
    d.panel("timeseries", "Oldest held head", "Age of the oldest held head, per replica and reason.",
            [(f"carrier_delivery_oldest_held_seconds{s}", "{{instance}} {{reason}}")], unit="s", width=8)
    d.panel("timeseries", "Parked tasks", "Tasks in the parking store for each replica's partitions, and tasks "
            "parked per second.",
            [(f"carrier_delivery_parked_tasks{s}", "parked {{instance}}"),
             (f"sum(rate(carrier_delivery_tasks_parked_total{s}[$__rate_interval]))", "parked per second"),
             (f"sum(rate(carrier_delivery_backlog_overflows_total{s}[$__rate_interval]))", "backlog overflows per second")],
            width=8)
    d.row("Attempts")
    d.panel("timeseries", "Attempts by status class", "HTTP attempts per second by the receiver's answer "
            "(timeout, connect, refused: no answer).",
            [(f"sum by (status_class) (rate(carrier_delivery_attempts_total{s}[$__rate_interval]))", "{{status_class}}")],
            unit="reqps", stack="normal")
    d.panel("timeseries", "Attempt latency", "Duration of HTTP attempts by outcome.",
            quantiles("carrier_delivery_attempt_seconds", s, "outcome"), unit="s")
    d.panel("timeseries", "In flight and active lanes", "Requests in flight (one at most per destination) and lanes "
            "with queued work, per replica.",
            [(f"carrier_delivery_requests_in_flight{s}", "in flight {{instance}}"),
             (f"carrier_delivery_active_lanes{s}", "lanes {{instance}}")], width=8)
    d.panel("timeseries", "Logs finished by status", "Logs that reached a final status per second.",
            [(f"sum by (status) (rate(carrier_delivery_logs_finished_total{s}[$__rate_interval]))", "{{status}}")],
            unit="reqps", width=8)
    d.panel("timeseries", "Outbound refusals by class", "Attempts refused by the outbound policy, by address class.",
            [(f"sum by (class) (increase(carrier_delivery_outbound_refused_total{s}[$__rate_interval]))", "{{class}}")], width=8)
    d.row("Partitions and control")
    d.panel("timeseries", "Queued in memory by partition", "Tasks queued in memory per owned partition.",
            [(f"max by (partition) (carrier_delivery_partition_depth{s})", "partition {{partition}}")], stack="normal", width=8)
    d.panel("timeseries", "Owned partitions", "Partitions of carrier.deliveries each worker owns (and registers for "
            "queue control).",
            [(f"carrier_delivery_owned_partitions{s}", "{{instance}}")], width=8)
    d.panel("timeseries", "Queue control requests", "Operator control requests served (queue, pause, resume, skip, "
            "retry now) by outcome.",
            [(f"sum by (method, outcome) (increase(carrier_delivery_control_requests_total{s}[$__rate_interval]))", "{{method}} {{outcome}}")],
            width=8)
    d.panel("timeseries", "Internal auth refusals", "gRPC calls to the control service refused for want of the "
            "service token, by reason.",
            [(f"sum by (reason) (increase(carrier_internal_auth_refused_total{s}[$__rate_interval]))", "{{reason}}")])
    consumer_rows(d, "carrier.deliveries")
    process_row(d)
    return d


def notifier() -> Dashboard:
    d = Dashboard("carrier-notifier", "Carrier / Notifier", "The log store writer, incident alerts and their "
                  "outbox, retention.", "carrier-notifier")
    s = d.sel()
    d.row("Log store")
    d.panel("timeseries", "Log store write latency", "Durable writes of log events to Postgres.",
            quantiles("carrier_notifier_write_seconds", s), unit="s", width=8)
    d.panel("timeseries", "Dead-lettered events", "Log events the log store refused, set aside in dead_letter_events.",
            [(f"sum(increase(carrier_notifier_dead_letter_events_total{s}[$__rate_interval]))", "dead-lettered")], width=8)
    logs = d.sel('what="logs"')
    d.panel("timeseries", "Retention purge", "Logs deleted past retention, and failed purge passes.",
            [(f"sum(increase(carrier_purged_rows_total{logs}[$__rate_interval]))", "logs purged"),
             (f"sum(increase(carrier_purge_failures_total{logs}[$__rate_interval]))", "failed passes")], width=8)
    d.row("Alerts")
    d.panel("timeseries", "Alert sends by channel and outcome", "Sends of failing/recovered alerts per minute "
            "(failed sends are retried; skipped: nothing to send to).",
            [(f"sum by (channel, outcome) (rate(carrier_notifier_alert_sends_total{s}[$__rate_interval])) * 60", "{{channel}} {{outcome}}")],
            width=8)
    d.panel("timeseries", "Alerts raised", "Incident alerts raised (one failing and one recovered per incident).",
            [(f"sum(increase(carrier_notifier_alerts_raised_total{s}[$__rate_interval]))", "raised")], width=8)
    d.panel("timeseries", "Outbox errors", "Alert outbox reads or updates that failed (Postgres), by channel.",
            [(f"sum by (channel) (increase(carrier_notifier_alert_outbox_errors_total{s}[$__rate_interval]))", "{{channel}}")], width=8)
    consumer_rows(d, "carrier.log-events")
    process_row(d)
    return d


DASHBOARDS = {"carrier-overview.json": overview, "carrier-ingress.json": ingress, "carrier-router.json": router,
              "carrier-delivery.json": delivery, "carrier-notifier.json": notifier}


def rendered() -> dict[str, str]:
    return {name: json.dumps(make().json(), indent=2) + "\n" for name, make in DASHBOARDS.items()}


def main() -> int:
    if sys.argv[1:] not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    check = sys.argv[1:] == ["--check"]
    stale = []
    for directory in OUT_DIRS:
        for name, text in rendered().items():
            path = directory / name
            if path.exists() and path.read_text() == text:
                continue
            if check:
                stale.append(path.relative_to(REPO))
            else:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
        if check and directory.exists():
            for extra in sorted(set(p.name for p in directory.glob("*.json")) - set(DASHBOARDS)):
                stale.append((directory / extra).relative_to(REPO))
    for path in stale:
        print(f"{path} differs from deploy/grafana/generate.py: run python3 deploy/grafana/generate.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
