"""The example alert rules and Grafana dashboard in docs/: promtool accepts the rules
and they fire on the series they are about; every metric the rules, the dashboard
and docs/metrics.md name is one a controller's scrape has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from medevac.cloud.driver import CloudDriver
from medevac.config import Settings
from medevac.service.metrics import BlocksCollector, ControllerMetrics
from medevac.storage import Database
from tests.api_world import build_world

DOCS = Path(__file__).resolve().parents[2] / "docs"
RULES = DOCS / "prometheus-rules.yml"
DASHBOARD = DOCS / "grafana-dashboard.json"
PROMETHEUS_OWN = {"up"}  # Prometheus' own series about its targets
METRIC = re.compile(r"\b(medevac_[a-z0-9_]+)")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: scripts/install-debian-deps.sh installs prometheus")
    return found


def scraped_names(settings: Settings, db: Database) -> set[str]:
    """Every sample name of a scrape of a controller with every block and a cluster."""
    world = build_world(settings, db)
    metrics = ControllerMetrics()
    cluster = {"members": ["a", "b"], "hosts": {"h1": 1}, "isolated": False, "lease_valid": True}
    cloud = CloudDriver("nowhere")
    cloud.results["compute", "ok"] += 1
    metrics.watch(
        BlocksCollector(
            monitor=world.monitor,
            inspector=world.inspector,
            notifier=world.notifier,
            cloud=cloud,
            cluster=lambda: cluster,
            loop_lag=lambda: 0.0,
        )
    )
    world.monitor.nova_events["instance.update"] += 1
    body, _ = metrics.render(None)
    return {
        s.name for family in text_string_to_metric_families(body.decode()) for s in family.samples
    }


def names_in(text: str) -> set[str]:
    return set(METRIC.findall(text))


def test_the_alert_rules_pass_promtools_check() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


SERIES = {
    'medevac_fencing_total{job="medevac",instance="c1",outcome="failed"}': "0 0 1 1 1",
    'medevac_cluster_isolated{job="medevac",instance="c1"}': "0 0 1 1 1",
    'medevac_event_loop_lag_seconds{job="medevac",instance="c1"}': "0 0 2 2 2",
    'up{job="medevac",instance="c1"}': "1 1 1 1 1",
    'up{job="medevac",instance="c2"}': "1 1 0 0 0",  # c2 dies at 2m
    'medevac_cluster_members{job="medevac",instance="c1"}': "2 2 1 1 1",
    'medevac_cluster_members{job="medevac",instance="c2"}': "2 2 stale stale stale",
}
C1 = {"job": "medevac", "instance": "c1"}
# (alert, when, the labels it fires with; None: it does not fire then)
EXPECTED: list[tuple[str, str, dict[str, str] | None]] = [
    ("MedevacFencingFailed", "1m", None),
    ("MedevacFencingFailed", "3m", {**C1, "outcome": "failed"}),
    ("MedevacControllerIsolated", "1m", None),
    ("MedevacControllerIsolated", "3m", C1),
    ("MedevacEventLoopStalled", "1m", None),
    ("MedevacEventLoopStalled", "4m", C1),
    ("MedevacControllerMissing", "1m", None),
    ("MedevacControllerMissing", "4m30s", {}),
    ("MedevacControllerDown", "4m", {"job": "medevac", "instance": "c2"}),
]


def rule_tests() -> dict[str, Any]:
    """promtool's unit tests of the rules: each expected alert with the severity and
    annotations the rules file gives it (rendered for its instance)."""
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    cases = []
    for alert, at, labels in EXPECTED:
        expected = []
        if labels is not None:
            rule = rules[alert]
            annotations = {
                k: v.replace("{{ $labels.instance }}", labels.get("instance", ""))
                for k, v in rule.get("annotations", {}).items()
            }
            expected.append(
                {"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": annotations}
            )
        cases.append({"eval_time": at, "alertname": alert, "exp_alerts": expected})
    return {
        "rule_files": [str(RULES)],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": v} for k, v in SERIES.items()],
                "alert_rule_test": cases,
            }
        ],
    }


def test_the_alert_rules_fire_on_what_they_are_about(tmp_path: Path) -> None:
    tests = tmp_path / "rules-test.yml"
    tests.write_text(json.dumps(rule_tests()))  # JSON is YAML
    result = subprocess.run(
        [promtool(), "test", "rules", str(tests)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_the_rules_dashboard_and_docs_name_is_scraped(
    settings: Settings, db: Database
) -> None:
    scraped = scraped_names(settings, db)
    rules = names_in(RULES.read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(queries) >= 20
    used = rules | names_in("\n".join(queries))
    assert used - scraped - PROMETHEUS_OWN == set()

    # docs/metrics.md lists each family; its names (suffixes aside) are all scraped too.
    def family(name: str) -> str:
        return re.sub(r"_(bucket|count|sum)$", "", name)

    documented = {family(n) for n in names_in((DOCS / "metrics.md").read_text())}
    families = {
        family(n)
        for n in scraped
        if n.startswith("medevac_") and not n.endswith("_created")  # prometheus_client's
    }
    assert documented - families == set()
    assert families - documented == set()
