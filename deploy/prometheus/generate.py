#!/usr/bin/env python3
"""Writes carrier-prometheusrule.yaml (and the Helm chart's copy) from carrier-rules.yml.

carrier-rules.yml, the plain Prometheus rules file, is the one source of truth; the
prometheus-operator PrometheusRule holds the same groups under `spec`, and the Helm chart ships
the plain file as helm/carrier/files/carrier-rules.yml (Helm cannot read files outside the
chart, and does not follow symlinks when packaging).

    python3 deploy/prometheus/generate.py           # rewrite both from carrier-rules.yml
    python3 deploy/prometheus/generate.py --check   # exit 1 if either differs (make test)

Needs PyYAML (Debian: python3-yaml; scripts/check-deploy.sh runs it with its own virtualenv).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SOURCE = HERE / "carrier-rules.yml"
PROMETHEUS_RULE = HERE / "carrier-prometheusrule.yaml"
CHART_COPY = REPO / "helm" / "carrier" / "files" / "carrier-rules.yml"

HEADER = """\
# GENERATED from deploy/prometheus/carrier-rules.yml by deploy/prometheus/generate.py: do not
# edit; change carrier-rules.yml and run the script (scripts/check-deploy.sh fails when they
# differ). The same groups as the plain rules file, for prometheus-operator: add the labels your
# Prometheus selects PrometheusRules by (ruleSelector, e.g. release: kube-prometheus-stack) and
# apply it in the namespace it watches. The Helm chart can create it too (prometheusRule.enabled).
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str):
    # Multi-line expressions stay readable as literal blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule(groups: list) -> str:
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "carrier",
            "labels": {
                "app.kubernetes.io/name": "carrier",
                "app.kubernetes.io/part-of": "carrier",
            },
        },
        "spec": {"groups": groups},
    }
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def expected() -> dict[Path, str]:
    source = SOURCE.read_text()
    groups = yaml.safe_load(source)["groups"]
    return {PROMETHEUS_RULE: prometheus_rule(groups), CHART_COPY: source}


def main() -> int:
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    stale = []
    for path, text in expected().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(path.relative_to(REPO))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    for path in stale:
        print(f"{path} differs from deploy/prometheus/carrier-rules.yml: run python3 "
              "deploy/prometheus/generate.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
