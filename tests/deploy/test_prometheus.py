"""deploy/prometheus and the dashboard's queries against a real Prometheus scraping a real daemon.

A simulated rig (`corticast rig`) streams over LSL, `corticast serve` runs the shipped model in
dry run with a deliberately eager policy, and Prometheus (Debian's package) scrapes it every
second with the shipped scrape job and rules. The test then arms the daemon (so the interlocks
get to block requests), kills the rig (so the stream goes stale and the daemon records a
fault), and runs every query of every dashboard panel and every alert expression through
Prometheus's HTTP API: each must return data, so a renamed metric or label breaks the build.

The rules hold no limit of their own: they compare with the ``corticast_config_*`` series the
daemon exports from its configuration. Two configurations, run through the daemon's own
instruments, give two sets of limits, and the same data alerts under one and not the other.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from service.config import load_settings
from service.daemon.daemon import Daemon
from service.daemon.metrics import FAULT_STAGES, DaemonMetrics
from tests.deploy._expressions import (
    PROMETHEUS_SERIES,
    alert_rules,
    dashboard_expressions,
    series_read,
    template_queries,
    with_bool,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "corticast.json"
RULES_TEST = Path(__file__).with_name("rules_test.yml")
TOKEN = "deploy-test-token-0123456789"
_APT_TIMEOUT_S = 100


@pytest.fixture(scope="module")
def prometheus_bin() -> dict[str, str]:
    """Paths of ``prometheus`` and ``promtool``; installed from Debian's package if missing
    and this is a root shell with apt (as on the project's machines), else the test skips,
    saying why apt could not install it (no network: CI without it skips these tests)."""
    found = _find_binaries()
    why = "not a root shell with apt-get"
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        why = _apt_install("prometheus")
        found = _find_binaries()
    if found is None:
        pytest.skip(
            "no prometheus/promtool binary, and Debian's `prometheus` package could not be "
            f"installed here ({why}; .ci/run installs it: apt-get update && apt-get install "
            "prometheus)"
        )
    return found


def _apt_install(package: str) -> str:
    """Install ``package`` with apt-get; returns what to say should its binaries still be
    missing (apt's last error). Without network apt fails, or with lists kept from an earlier
    update waits on the mirror: given up after the timeout rather than hang the suite."""
    try:
        result = subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_APT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"apt-get install {package} did not finish within {_APT_TIMEOUT_S} s"
    if result.returncode == 0:
        return f"apt-get has {package} installed, yet its binaries are not on PATH"
    errors = [line for line in result.stderr.splitlines() if line.startswith("E: ")]
    return errors[-1] if errors else f"apt-get install {package} exited {result.returncode}"


def _find_binaries() -> dict[str, str] | None:
    paths = {name: shutil.which(name) for name in ("prometheus", "promtool")}
    return paths if all(paths.values()) else None


# --------------------------------------------------------------------------- static checks
def test_with_bool_turns_every_comparison_outside_matchers_into_a_bool_one():
    assert with_bool('a{x!="y",z=~"1|2"} > 0.5 or b == 0') == (
        'a{x!="y",z=~"1|2"} > bool 0.5 or b == bool 0'
    )
    assert with_bool("a <= bool 1 and on (i) b != 2") == "a <= bool 1 and on (i) b != bool 2"
    assert with_bool('x{l="a>b"} < ignoring (p) y') == 'x{l="a>b"} < bool ignoring (p) y'


def test_the_fault_alerts_words_name_every_stage_a_fault_is_counted_under():
    """The fault alert's comment and its row in deploy/README.md list the stages it fires
    for; a stage added to ``corticast_daemon_faults`` must be named there too."""
    rule = RULES.read_text()
    comment = rule[rule.index("alert: CorticastLoopFaultDisarmed") :].split("expr:")[0]
    [row] = [
        line
        for line in (DEPLOY / "README.md").read_text().splitlines()
        if line.startswith("| CorticastLoopFaultDisarmed |")
    ]
    for words in (comment, row):
        listed = words[words.index("(") + 1 : words.index(")")].replace("#", "").split(",")
        assert sorted(" ".join(stage.split()) for stage in listed) == sorted(FAULT_STAGES)


def test_rules_pass_promtool_check_and_their_unit_tests(prometheus_bin):
    promtool = prometheus_bin["promtool"]
    checks = [
        [promtool, "check", "rules", str(RULES)],
        [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        [promtool, "test", "rules", str(RULES_TEST)],
    ]
    for command in checks:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{' '.join(command[1:])}:\n{result.stdout}{result.stderr}"
    alerts = {rule["alert"] for rule in alert_rules(RULES)}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts <= tested, f"alerts never shown to fire in rules_test.yml: {alerts - tested}"


def test_every_series_the_dashboard_and_the_rules_read_is_served_by_the_daemon(tmp_path, source_id):
    """A started daemon's registry (what ``/metrics`` serves) has every series; a renamed
    metric would otherwise leave a panel empty or an alert silent. A counter counts as served
    by its ``_total`` sample, which a labelled one has only once its labels are initialised
    (so its panel shows 0, not "No data"); a gauge that has nothing to report before the first
    measurement (PSNR, wave estimates) counts by its name. Every metric the READMEs name is
    served too (with another tool's marker stream configured, as the marker metrics need)."""
    settings = _daemon_config(tmp_path, source_id)
    settings["ingest"]["stimulation_marker_streams"] = [f"{source_id}-tool"]
    config = tmp_path / "corticast.toml"
    config.write_text(_toml(settings), encoding="utf-8")
    with Daemon(load_settings(config)) as daemon:  # no stream: it keeps looking
        families = list(daemon.registry.collect())
    served = {metric.name for metric in families if metric.type == "gauge"}
    served |= {sample.name for metric in families for sample in metric.samples}
    documents = ("README.md", "deploy/README.md", "models/weights/README.md")
    named = {
        (document, name)
        for document in documents
        for name in re.findall(r"`(corticast_[a-z0-9_]+)[`{]", (ROOT / document).read_text())
    }
    assert len(named) > 20
    unserved = sorted(pair for pair in named if pair[1] not in served)
    assert not unserved, f"named in a README but not served: {unserved}"
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = dashboard_expressions(dashboard)
    expressions += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules(RULES)]
    expressions += [(f"variable {name}", metric) for name, metric, _ in template_queries(dashboard)]
    missing = {
        (where, name)
        for where, expr in expressions
        for name in series_read(expr) - PROMETHEUS_SERIES
        if name not in served
    }
    assert not missing, f"read but not served: {sorted(missing)}"
    read = set().union(*(series_read(expr) for _, expr in expressions))
    assert {"corticast_config_stale_after_seconds", "corticast_bridge_frame_errors_total"} <= read


def test_the_same_data_alerts_on_each_daemons_own_configured_limits(prometheus_bin, tmp_path):
    """Three daemons send the same series; one runs the defaults, one a slower stream
    (100 Hz), a later staleness limit and a 3 dB health margin, one the defaults at stride 2,
    each exported as its daemon would. Only the first alerts on everything: stale at 0.1 s,
    p99 prediction age ~4.7 ms, model 2 dB under persistence are all within the second's
    limits; at stride 2 a window is due every 7.2 ms, so ~4.7 ms is within the third's
    prediction budget, while its other limits are the defaults'."""
    (tmp_path / "default.toml").write_text("", encoding="utf-8")
    (tmp_path / "configured.toml").write_text(
        "[stream]\nsample_rate_hz = 100.0\n[ingest]\nstale_after_frames = 50\n"
        "[loop]\nhealth_margin_db = 3.0\n",
        encoding="utf-8",
    )
    (tmp_path / "stride2.toml").write_text("[scheduler]\nstride = 2\n", encoding="utf-8")
    series = []
    for instance in ("default", "configured", "stride2"):
        labels = f'job="corticast", instance="{instance}"'
        limits = _exported_limits(load_settings(tmp_path / f"{instance}.toml"))
        series += [
            {"series": f"{name}{{{labels}}}", "values": f"{value!r}x200"}
            for name, value in limits.items()
        ]
        series += _same_data(labels)
    firing = 'count by (alertname, instance) (ALERTS{alertstate="firing"})'
    firing_on_default = {  # the horizon alert fires once per horizon
        "CorticastHorizonPsnrBelowPersistence": 2,
        "CorticastLivePsnrBelowPersistence": 1,
        "CorticastPredictionAgeOverBudget": 1,
        "CorticastStreamStale": 1,
    }
    firing_on_stride2 = {
        alert: count
        for alert, count in firing_on_default.items()
        if alert != "CorticastPredictionAgeOverBudget"
    }
    expected = [
        {"labels": f'{{alertname="{alert}", instance="{instance}"}}', "value": count}
        for instance, firing in (("default", firing_on_default), ("stride2", firing_on_stride2))
        for alert, count in firing.items()
    ]
    test_file = tmp_path / "limits_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES)],
                "evaluation_interval": "5s",
                "tests": [
                    {
                        "interval": "5s",
                        "input_series": series,
                        "promql_expr_test": [
                            {"expr": firing, "eval_time": "15m", "exp_samples": expected}
                        ],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        [prometheus_bin["promtool"], "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _exported_limits(settings: Any) -> dict[str, float]:
    """The ``corticast_config_*`` values a daemon with ``settings`` serves."""
    registry = CollectorRegistry()
    DaemonMetrics(registry, settings)
    return {
        sample.name: sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name.startswith("corticast_config_")
    }


def _same_data(labels: str) -> list[dict[str, str]]:
    """15 minutes at 5 s steps of one rig's trouble: the newest sample 0.1 s old, 5 % of
    100 predictions per step handed on between 3.6 and 5 ms, the model 2 dB under persistence
    at both horizons (so over all horizons too)."""
    buckets = {"0.002": "0+95x200", "0.0036": "0+95x200", "0.005": "0+100x200"}
    buckets["+Inf"] = buckets["0.005"]
    psnr = {("model", "1"): 18, ("model", "2"): 16, ("persistence", "1"): 20}
    psnr[("persistence", "2")] = 18
    pooled = {  # over all horizons, as the daemon exports it: PSNR of the pooled MSE
        name: -10 * math.log10(sum(10 ** (-psnr[name, h] / 10) for h in ("1", "2")) / 2)
        for name in ("model", "persistence")
    }
    return [
        {"series": f"corticast_ingest_staleness_seconds{{{labels}}}", "values": "0.1x200"},
        {"series": f"corticast_ingest_connected{{{labels}}}", "values": "1x200"},
        *(
            {
                "series": f'corticast_prediction_age_seconds_bucket{{{labels}, le="{le}"}}',
                "values": values,
            }
            for le, values in buckets.items()
        ),
        *(
            {
                "series": f'corticast_accuracy_psnr_db{{{labels}, predictor="{p}", horizon="{h}"}}',
                "values": f"{db}x200",
            }
            for (p, h), db in psnr.items()
        ),
        *(
            {
                "series": f'corticast_accuracy_pooled_psnr_db{{{labels}, predictor="{p}"}}',
                "values": f"{db:.3f}x200",
            }
            for p, db in pooled.items()
        ),
    ]


# --------------------------------------------------------------------------- live check
@pytest.mark.slow
def test_every_dashboard_query_and_alert_expression_returns_data_from_a_live_daemon(
    prometheus_bin, tmp_path, source_id
):
    config = _daemon_config(tmp_path, source_id)
    api_port = config["api"]["port"]
    with _Processes(tmp_path) as processes:
        prometheus_url = processes.start_prometheus(prometheus_bin["prometheus"], config)
        processes.start("rig", "rig", "--source", "synthetic", "--seconds", "120")
        processes.start("daemon", "serve")
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10.0) as daemon,
            httpx.Client(base_url=prometheus_url, timeout=10.0) as prometheus,
        ):
            _arm_until_interlocks_block(daemon, prometheus, processes)
            _assert_container_healthcheck_passes(api_port)
            _wait(lambda: _arm(daemon), 30, "the daemon to be armed", processes)
            _kill_rig_until_stream_stale(prometheus, processes)
            _assert_every_expression_returns_data(prometheus)
            _assert_scrape_and_rules_healthy(prometheus, f"127.0.0.1:{api_port}")
        assert processes.stop_all() == {"daemon": 0, "prometheus": 0}  # clean SIGTERM exits


def _arm_until_interlocks_block(
    daemon: httpx.Client, prometheus: httpx.Client, processes: _Processes
) -> None:
    """Arm (dry run): the eager policy requests at almost every prediction, the first trains
    pass, then the refractory period and the minute budget block. Return once Prometheus has
    seen the interlock alert's own condition (blocks counted two scrapes apart). A loaded
    machine may stall the stream for a moment, which disarms: arm again until then."""
    _wait(lambda: _status(daemon, "/readyz") == 200, 60, "the daemon to be ready", processes)
    blocked = _rule("CorticastStimulationBlockedByInterlock")["expr"]
    _wait(lambda: _arm(daemon) and _query(prometheus, blocked), 60,
          "interlock blocks in Prometheus", processes)  # fmt: skip


def _arm(daemon: httpx.Client) -> bool:
    """Arm unless armed (refused while not ready); whether it is armed now."""
    if daemon.get("/status").json()["armed"]:
        return True
    return daemon.post("/control/arm", headers={"Authorization": f"Bearer {TOKEN}"}).is_success


def _assert_container_healthcheck_passes(api_port: int) -> None:
    """The container images' HEALTHCHECK script, pointed at this daemon, says healthy."""
    health = subprocess.run(
        [sys.executable, str(DEPLOY / "container" / "healthcheck.py")],
        env={**os.environ, "CORTICAST_API__PORT": str(api_port)},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert health.returncode == 0, health.stderr


def _kill_rig_until_stream_stale(prometheus: httpx.Client, processes: _Processes) -> None:
    """The rig dies while armed: the stream goes stale and the daemon disarms (a fault)."""
    processes.stop("rig")
    stale = _rule("CorticastStreamStale")["expr"]
    _wait(lambda: _query(prometheus, stale), 30, "the stream to go stale", processes)
    faults = "corticast_daemon_faults_total"
    _wait(lambda: _query(prometheus, faults), 30, "the fault to be scraped", processes)


def _assert_every_expression_returns_data(prometheus: httpx.Client) -> None:
    expressions = dashboard_expressions(json.loads(DASHBOARD.read_text(encoding="utf-8")))
    expressions += [
        (f"alert {rule['alert']} (as bool)", with_bool(rule["expr"])) for rule in alert_rules(RULES)
    ]
    empty = _still_empty(prometheus, expressions, deadline_s=30)
    assert not empty, "expressions that returned no data:\n" + "\n".join(
        f"  {where}: {expr}" for where, expr in empty
    )


def _assert_scrape_and_rules_healthy(prometheus: httpx.Client, instance: str) -> None:
    """The dashboard's variable lists the daemon; every rule evaluates without error; the
    target is up."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for name, metric, label in template_queries(dashboard):
        values = prometheus.get(f"/api/v1/label/{label}/values", params={"match[]": metric})
        assert instance in values.json()["data"], (name, values.text)
    groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    targets = prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("corticast", "up")]


def _rule(alert: str) -> dict[str, Any]:
    return next(rule for rule in alert_rules(RULES) if rule["alert"] == alert)


def _still_empty(
    prometheus: httpx.Client, expressions: list[tuple[str, str]], deadline_s: float
) -> list[tuple[str, str]]:
    """Expressions that have not returned data within ``deadline_s`` (rules evaluate every
    second, so an alert-derived series may need one more round)."""
    deadline = time.monotonic() + deadline_s
    pending = list(expressions)
    while True:
        pending = [(where, expr) for where, expr in pending if not _query(prometheus, expr)]
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(1.0)


def _query(prometheus: httpx.Client, expr: str) -> list[dict[str, Any]]:
    """The result of an instant query; a query Prometheus rejects fails the test at once."""
    response = prometheus.post("/api/v1/query", data={"query": expr})
    body = response.json()
    assert body["status"] == "success", f"{expr}\n{body.get('error')}"
    return body["data"]["result"]


def _status(client: httpx.Client, path: str) -> int | None:
    try:
        return client.get(path).status_code
    except httpx.HTTPError:
        return None


def _wait(condition: Callable[[], Any], timeout: float, what: str, processes: _Processes) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        processes.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{processes}")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _daemon_config(tmp_path: Path, source_id: str) -> dict[str, Any]:
    """A dry-run daemon on free ports whose policy requests at nearly every prediction, with
    a short refractory period and a minute budget of three trains: the interlocks soon block."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        bridge_port = sock.getsockname()[1]
    return {
        "stream": {"source_id": source_id, "resolve_timeout_s": 2.0},
        # Stale after 180 ms rather than 36 ms: a busy test machine must not disarm it.
        "ingest": {"stale_after_frames": 50},
        "rig": {"duration_s": 20.0},
        "model": {"threads": 1},
        "bridge": {
            "dry_run": True,
            "port": bridge_port,
            "audit_log": str(tmp_path / "audit.jsonl"),
        },
        "policy": {
            "target_electrodes": [[9, 19]],
            "min_pgd": 0.0,
            "min_speed_mps": 1e-4,
            "max_speed_mps": 1e3,
            "min_amplitude_sd": 1e-4,
            "max_direction_error_deg": 180.0,
            "min_lead_ms": 0.0,
            "max_lead_ms": 1e6,
            "persistence_frames": 1,
        },
        "interlocks": {
            "refractory_s": 0.2,
            "max_train_duration_ms": 100,
            "max_trains_per_minute": 3,
        },
        "zmq": {"pub_endpoint": "tcp://127.0.0.1:*", "query_endpoint": "tcp://127.0.0.1:*"},
        "api": {"port": _free_port(), "token": TOKEN},
    }


def _toml(config: dict[str, Any]) -> str:
    """The few TOML shapes the config above uses (tables of scalars and lists)."""
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


class _Processes:
    """The rig, the daemon and Prometheus as child processes, every one stopped on exit."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self._running: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Path] = {}
        self._config_file = tmp_path / "corticast.toml"

    def __enter__(self) -> _Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start_prometheus(self, binary: str, daemon_config: dict[str, Any]) -> str:
        """Write the daemon's config and a Prometheus config derived from the shipped one
        (1 s scrapes and rule evaluation, the daemon's port), start Prometheus; its URL."""
        self._config_file.write_text(_toml(daemon_config), encoding="utf-8")
        shipped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        shipped["global"].update(
            scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s"
        )
        shipped["rule_files"] = [str(RULES)]
        (job,) = shipped["scrape_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{daemon_config['api']['port']}"]}]
        config = self._tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump(shipped), encoding="utf-8")
        port = _free_port()
        self._spawn(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
        )
        return f"http://127.0.0.1:{port}"

    def start(self, name: str, *command: str) -> None:
        """``corticast COMMAND --config FILE ...`` as it runs on a rig."""
        args = [sys.executable, "-m", "service.cli.app", command[0], "--config"]
        self._spawn(name, [*args, str(self._config_file), *command[1:]])

    def _spawn(self, name: str, command: list[str]) -> None:
        log = self._tmp / f"{name}.log"
        with log.open("wb") as out:
            self._running[name] = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        self._logs[name] = log

    def check_alive(self) -> None:
        for name, process in self._running.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}\n{self}")

    def stop(self, name: str) -> int:
        """SIGTERM (a clean stop), SIGKILL after 30 s; the exit status."""
        process = self._running.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return process.returncode

    def stop_all(self) -> dict[str, int]:
        return {name: self.stop(name) for name in list(self._running)}

    def __str__(self) -> str:
        return "\n".join(
            f"--- {name} log (last 2000 characters):\n{log.read_text(errors='replace')[-2000:]}"
            for name, log in self._logs.items()
        )
