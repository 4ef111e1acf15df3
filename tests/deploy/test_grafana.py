"""The Grafana dashboard and its provisioning: schema, datasource, layout, and where compose
mounts them. (Its queries run against a live daemon in test_prometheus.py.)"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from service.config import Settings
from service.daemon.metrics import DaemonMetrics
from tests.deploy._expressions import (
    PROMETHEUS_SERIES,
    alert_rules,
    dashboard_expressions,
    series_read,
)
from tests.deploy._grafana_schema import schema_problems

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana/dashboards/corticast.json").read_text(encoding="utf-8"))
PROVISIONING = DEPLOY / "grafana" / "provisioning"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]


def test_the_dashboard_follows_grafanas_dashboard_schema():
    assert schema_problems(DASHBOARD) == []


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (lambda d: d["panels"][1]["targets"][0].update(legendFromat="x"), "legendFromat"),
        (lambda d: d["panels"][1].update(type="timeserie"), "'timeserie' is not a known panel"),
        (lambda d: d["panels"][1]["gridPos"].update(h="4"), "grid_pos.h: '4' is not int"),
        (lambda d: d.update(graphTooltip=7), "graph_tooltip: 7"),
        (lambda d: _first(d, "timeseries")["options"]["legend"].update(placement="up"), "up"),
        (lambda d: _first(d, "barchart")["transformations"][0].update(optoins={}), "optoins"),
    ],
)
def test_the_schema_check_reports_what_grafana_would_drop_or_reject(break_it, expected):
    """The SDK's decoder alone would accept each of these (it drops or copies them)."""
    broken = copy.deepcopy(DASHBOARD)
    break_it(broken)
    problems = schema_problems(broken)
    assert any(expected in problem for problem in problems), problems


def _first(dashboard: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(panel for panel in dashboard["panels"] if panel["type"] == kind)


def test_every_panel_query_and_variable_uses_the_provisioned_datasource():
    (source,) = _yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    expected = {"type": source["type"], "uid": source["uid"]}
    assert expected == {"type": "prometheus", "uid": "corticast-prometheus"}
    for panel in _panels():
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == expected, (panel["title"], target["refId"])
    for variable in DASHBOARD["templating"]["list"]:
        assert variable["datasource"] == expected, variable["name"]


def test_panels_have_unique_ids_and_do_not_overlap():
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_the_dashboard_shows_what_the_issue_asks_for():
    """Stream health, latency percentiles, live accuracy vs persistence, waves, stimulation
    with reasons, arm state (the daemon's and the bridge's), interlock budgets, bad frames
    from the device, the configured limits: each by the metric that carries it."""
    queries = " ".join(target["expr"] for panel in _panels() for target in panel["targets"])
    for needed in (
        "corticast_ingest_staleness_seconds",
        "corticast_ingest_missing_frames_total",
        "histogram_quantile(0.99, sum by (le) (rate(corticast_inference_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(corticast_prediction_age_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(corticast_decision_data_age_seconds_bucket",
        'corticast_accuracy_psnr_db{predictor="persistence"',
        'corticast_accuracy_pooled_psnr_db{predictor="persistence"',
        "max by (horizon) (corticast_blend_weight{",
        "max by (horizon) (corticast_blend_ar_weight{",
        'corticast_waves_predicted{quantity="speed_mps"',
        'corticast_waves_predicted{quantity="direction_deg"',
        "sum by (outcome, reason) (increase(corticast_bridge_requests_total",
        "corticast_bridge_armed",
        "corticast_bridge_minute_budget_left",
        "corticast_bridge_day_budget_left",
        "corticast_daemon_armed",
        "sum by (code) (increase(corticast_bridge_frame_errors_total",
        "corticast_config_frame_period_seconds",
        "corticast_config_prediction_budget_seconds",
        "corticast_config_stale_after_seconds",
        "corticast_config_max_sample_age_seconds",
        "corticast_config_health_margin_db",
    ):
        assert needed in queries, needed


def test_the_panel_of_the_ar_baselines_psnr_shows_its_failed_rounds():
    """While the live AR baseline's rounds fail, its PSNR line just stops (the fit is
    dropped): beside it, the failed rounds say why, on an axis of their own."""
    [panel] = [p for p in _panels() if p["title"] == "Live PSNR over all horizons"]
    [psnr] = [t for t in panel["targets"] if t["legendFormat"] == "{{predictor}}"]
    assert psnr["expr"].startswith("avg by (predictor) (corticast_accuracy_pooled_psnr_db{")  # ar
    [failed] = [t for t in panel["targets"] if "ar_failed_rounds" in t["expr"]]
    assert failed["expr"].startswith("sum(increase(corticast_accuracy_ar_failed_rounds_total{")
    [override] = [
        o for o in panel["fieldConfig"]["overrides"]
        if o["matcher"] == {"id": "byName", "options": failed["legendFormat"]}
    ]  # fmt: skip
    properties = {p["id"]: p["value"] for p in override["properties"]}
    assert properties["custom.axisPlacement"] == "right" and properties["unit"] == "short"


def test_panels_of_a_limited_quantity_draw_the_configured_limit_not_a_fixed_line():
    """A threshold line fixed in the panel would show the default rig's limit on every rig:
    each panel of a quantity an alert compares with a configured limit draws that limit's
    exported series instead."""
    limited = {
        "corticast_ingest_staleness_seconds": "corticast_config_stale_after_seconds",
        "corticast_prediction_age_seconds_bucket": "corticast_config_prediction_budget_seconds",
        "corticast_inference_latency_seconds_bucket": "corticast_config_prediction_budget_seconds",
    }
    drawn = 0
    for panel in _panels():
        queries = " ".join(target["expr"] for target in panel["targets"])
        for quantity, limit in limited.items():
            if quantity in queries:
                drawn += 1
                assert limit in queries, (panel["title"], limit)
                custom = panel["fieldConfig"]["defaults"]["custom"]
                assert custom.get("thresholdsStyle", {"mode": "off"})["mode"] == "off"
    assert drawn == 3


def test_every_series_an_alert_reads_is_on_a_panel():
    """Paged by an alert, the engineer on call finds on the dashboard every series it
    compares, the limit included."""
    shown = set().union(*(series_read(expr) for _, expr in dashboard_expressions(DASHBOARD)))
    unseen = {
        rule["alert"]: sorted(series_read(rule["expr"]) - shown - PROMETHEUS_SERIES)
        for rule in alert_rules(DEPLOY / "prometheus" / "rules.yml")
    }
    assert {alert: names for alert, names in unseen.items() if names} == {}


def test_the_configured_limits_panel_shows_every_exported_limit_in_its_unit():
    """Seconds as seconds, decibels as dB, and a ratio (the rate tolerance) as a percentage,
    not as seconds under the panel's default unit."""
    registry = CollectorRegistry()
    DaemonMetrics(registry, Settings())
    exported = {
        metric.name for metric in registry.collect() if metric.name.startswith("corticast_config_")
    }
    [panel] = [p for p in _panels() if p["title"] == "Configured limits"]
    units = {}
    for target in panel["targets"]:
        name = target["legendFormat"].replace("{{instance}}", "rig:8080")
        unit = panel["fieldConfig"]["defaults"]["unit"]
        for override in panel["fieldConfig"]["overrides"]:
            matcher = override["matcher"]
            matches = (matcher["id"] == "byName" and matcher["options"] == name) or (
                matcher["id"] == "byRegexp" and re.search(matcher["options"], name)
            )
            unit = next(
                (p["value"] for p in override["properties"] if matches and p["id"] == "unit"), unit
            )
        units[target["expr"].split("{")[0]] = unit
    assert set(units) == exported
    expected = {"seconds": "s", "db": "dB"}
    for metric, unit in units.items():
        assert unit == expected.get(metric.rsplit("_", 1)[1], "percentunit"), metric


def test_provisioning_finds_what_compose_mounts():
    compose = _yaml(DEPLOY / "compose.yaml")
    grafana = compose["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])  # source: target
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = _yaml(PROVISIONING / "dashboards" / "corticast.yml")["providers"]
    assert provider["options"]["path"] == mounts["./grafana/dashboards"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/corticast.json"
    (source,) = _yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    listen = next(
        arg.split("=", 1)[1]
        for arg in compose["services"]["prometheus"]["command"]
        if arg.startswith("--web.listen-address=")
    )
    assert source["url"] == f"http://{listen}"
    scrape = _yaml(DEPLOY / "prometheus" / "prometheus.yml")["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape
