"""The monitoring assets under stacks/monitoring: checked by the real promtool, and held to the
metrics the services really export.

promtool comes from Debian's prometheus package, which scripts/bootstrap installs: without it these
tests fail (a skipped check would let a broken rule file through CI).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.distributor.metrics import DistributorMetrics
from services.reloader.metrics import ReloaderMetrics
from services.unsealer.metrics import UnsealerMetrics

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "stacks/monitoring"
RULES = MONITORING / "certflow-alerts.yml"
RULE_TESTS = MONITORING / "certflow-alerts.test.yml"
SCRAPE = MONITORING / "prometheus-scrape.yml"
DASHBOARD = MONITORING / "certflow-dashboard.json"
DOCS = ROOT / "docs/monitoring.md"

# Metrics the rules may use before any registry here defines them, and why. A rule over a series
# that does not exist selects nothing and never fires.
PENDING = {
    "certflow_notifications_total": "the notifier's counter (issue 12, notifications)",
}
METRIC = re.compile(r"\b(certflow_[a-z0-9_]+)\b")
RECORDED = re.compile(r"\b(certflow:[a-z0-9_:]+)\b")


def _suffixes(kind: str) -> tuple[str, ...]:
    """The sample names a metric family of ``kind`` exposes, as suffixes of its name."""
    return {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }.get(kind, ("",))


def exported_names() -> set[str]:
    """Every sample name the three services' registries can expose (labelled metrics included,
    even those with no child yet)."""
    registries: list[CollectorRegistry] = [
        ReloaderMetrics().registry,
        DistributorMetrics().registry,
        UnsealerMetrics().registry,
    ]
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _suffixes(family.type))
    return names


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: scripts/bootstrap installs it (Debian package `prometheus`, "
            "apt-get install --no-install-recommends prometheus)"
        )
    return path


def run(promtool: str, *args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def rules_doc() -> dict[str, Any]:
    doc = yaml.safe_load(RULES.read_text())
    assert isinstance(doc, dict)
    return doc


def rules() -> Iterator[dict[str, Any]]:
    for group in rules_doc()["groups"]:
        yield from group["rules"]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def dashboard_targets() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


# -- promtool ---------------------------------------------------------------------------------


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(list(rules()))} rules found" in result.stdout


def test_the_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_config_with_the_scrape_example_and_the_rules_passes_promtool(
    promtool: str, tmp_path: Path
) -> None:
    # Prometheus has no include for scrape configs (before 2.43): the example is a fragment that
    # goes into prometheus.yml as it is, so the minimal config is the fragment plus rule_files.
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 30s\n  evaluation_interval: 30s\n"
        f"rule_files:\n  - {json.dumps(str(RULES))}\n" + SCRAPE.read_text()
    )
    result = run(promtool, "check", "config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_the_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    # promtool parses PromQL only inside rules: each panel query becomes a recording rule.
    # Grafana's $__rate_interval is replaced by a literal range first.
    queries = [
        {"record": f"dashboard:query_{i}", "expr": target["expr"].replace("$__rate_interval", "5m")}
        for i, (_, target) in enumerate(dashboard_targets())
    ]
    as_rules = tmp_path / "dashboard-queries.yml"
    as_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": queries}]}))
    result = run(promtool, "check", "rules", str(as_rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the metrics are real ---------------------------------------------------------------------


def test_the_registries_are_read_with_their_suffixes() -> None:
    names = exported_names()
    assert "certflow_distributor_sync_errors_total" in names  # counter
    assert "certflow_distributor_peer_fanout_seconds_bucket" in names  # histogram
    assert "certflow_unsealer_member_role" in names  # labelled gauge, no child yet
    assert "certflow_distributor_sync_errors" not in names


def test_every_metric_in_the_rules_is_exported() -> None:
    names = exported_names()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        used = set(METRIC.findall(rule["expr"]))
        unknown = used - names - set(PENDING)
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)}"
        assert set(RECORDED.findall(rule["expr"])) <= recorded


def test_every_metric_on_the_dashboard_is_exported() -> None:
    names = exported_names()
    for panel, target in dashboard_targets():
        unknown = set(METRIC.findall(target["expr"])) - names - set(PENDING)
        assert not unknown, f"panel {panel['title']!r}: {sorted(unknown)}"


def test_the_metric_check_catches_a_misspelt_name() -> None:
    names = exported_names()
    assert not {"certflow_distributor_rollout_halted"} - names
    assert {"certflow_distributor_rollout_halt"} - names


# -- what an operator reads --------------------------------------------------------------------


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    docs = DOCS.read_text()
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        notes = rule["annotations"]
        assert notes["summary"].strip(), name
        assert 'README.md, section "Runbook"' in " ".join(notes["description"].split()), name
        anchor = name.lower()
        assert notes["runbook_url"] == f"docs/monitoring.md#{anchor}", name
        # GitHub makes the anchor of "### CertflowX" from the heading text, lower-cased.
        assert re.search(rf"^### {name}$", docs, re.MULTILINE), f"docs/monitoring.md: {name}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in doc["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set()
    assert names - quiet == set()


CONSUMER_METRIC = "certflow_distributor_consumer_"


def test_consumer_rules_and_panels_name_the_consumer_by_its_own_label() -> None:
    # The consumer metrics name the consumer in `consumer`: the scrape's target label `service`
    # (prometheus-scrape.yml) is always cert-distributor there.
    consumer_alerts = [rule for rule in alerts() if CONSUMER_METRIC in rule["expr"]]
    assert len(consumer_alerts) >= 3
    for rule in consumer_alerts:
        text = " ".join(rule["annotations"].values())
        assert "$labels.consumer" in text, rule["alert"]
        assert not re.search(r"\$labels\.service\b", text), rule["alert"]
    for panel, target in dashboard_targets():
        if CONSUMER_METRIC in target["expr"]:
            assert not re.search(r"by \((?:[^)]*, )?service\b", target["expr"]), panel["title"]


def test_the_readme_has_the_runbook_section_the_alerts_point_at() -> None:
    assert re.search(r"^## Runbook$", (ROOT / "README.md").read_text(), re.MULTILINE)


# -- the dashboard ----------------------------------------------------------------------------


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    doc = dashboard()
    assert isinstance(doc["schemaVersion"], int)
    assert doc["schemaVersion"] >= 36
    assert doc["title"]
    assert doc["uid"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    ids = [panel["id"] for panel in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queried = [panel for panel in doc["panels"] if panel["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        ref_ids = [target["refId"] for target in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_the_dashboard_shows_what_the_brief_asks_for() -> None:
    exprs = " ".join(target["expr"] for _, target in dashboard_targets())
    for metric in (
        "certflow_cert_not_after_timestamp_seconds",  # days left
        "certflow_distributor_installed_not_after_timestamp_seconds",
        "certflow_distributor_rollout_halted",  # rollout state
        "certflow_unsealer_member_role",  # members by role
        "certflow_vault_sealed_seconds",  # sealed
        "certflow_distributor_last_sync_timestamp_seconds",  # sync age
        "certflow_distributor_sync_errors_total",  # errors
        "certflow_distributor_consumer_state",  # consumers by state
        "certflow_distributor_consumer_tasks_serving_old",
    ):
        assert metric in exprs, metric


# -- CI installs promtool ---------------------------------------------------------------------


def test_bootstrap_installs_promtool() -> None:
    assert "promtool:prometheus" in (ROOT / "scripts/bootstrap").read_text()
