"""The PromQL that deploy/ ships, collected so a test can run every expression.

Two sources: the targets of every dashboard panel (with Grafana's variables replaced as
Grafana would), and the alert rules. An alert's expression returns data only while it fires,
so for the live check its comparisons are turned into ``bool`` comparisons: ``x > 0.036``
becomes ``x > bool 0.036``, which yields 0 or 1 for every series the alert could fire on.
"Returns data" then means what matters here: every metric and label the rule reads exists in
the daemon's scrape. Whether each alert fires when it should is promtool's unit test
(rules_test.yml).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

RATE_INTERVAL = "15s"
"""What ``$__rate_interval`` becomes: several scrapes of the test's 1 s interval."""

_GRAFANA_VARIABLES = {
    "$__rate_interval": RATE_INTERVAL,
    "$__interval": "1s",
    "$__range": "1m",
    "$instance": ".*",  # the dashboard's "All" (allValue), what it opens with
}
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[^,]+),\s*(?P<label>\w+)\)$")
_SELECTED = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
_OURS = re.compile(r"\bcorticast_[a-z0-9_]+\b")
PROMETHEUS_SERIES = frozenset({"up", "ALERTS"})
"""Series Prometheus makes itself (scrape health, alert state): no daemon serves them."""


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) for every query of every panel, variables replaced."""
    found = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r} query {target['refId']}"
            found.append((where, grafana_substitute(target["expr"])))
    return found


def template_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, metric, label) of every ``label_values(metric, label)`` variable."""
    found = []
    for variable in dashboard["templating"]["list"]:
        match = _LABEL_VALUES.match(variable["query"])
        if match is None:
            raise ValueError(f"variable {variable['name']!r}: unexpected query {variable['query']}")
        found.append((variable["name"], match["metric"].strip(), match["label"]))
    return found


def alert_rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a Prometheus rules file."""
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def series_read(expr: str) -> set[str]:
    """The metric names ``expr`` reads: every ``corticast_*`` name, and any other name that
    selects series (``name{...}``), such as ``up``."""
    return set(_OURS.findall(expr)) | set(_SELECTED.findall(expr))


def grafana_substitute(expr: str) -> str:
    """``expr`` with the dashboard's variables replaced; an unknown one is an error."""
    for name in sorted(_GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, _GRAFANA_VARIABLES[name])
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable left in {expr!r}")
    return expr


def with_bool(expr: str) -> str:
    """``expr`` with ``bool`` after every comparison operator outside label matchers."""
    out: list[str] = []
    depth = 0
    quote: str | None = None
    k = 0
    while k < len(expr):
        char = expr[k]
        if quote is not None:
            out.append(char)
            if char == "\\":
                out.append(expr[k + 1])
                k += 1
            elif char == quote:
                quote = None
            k += 1
            continue
        if char in "\"'`":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0:
            operator = next((op for op in _COMPARISONS if expr.startswith(op, k)), None)
            if operator is not None:
                out.append(operator)
                k += len(operator)
                if not re.match(r"\s*bool\b", expr[k:]):
                    out.append(" bool")
                continue
        out.append(char)
        k += 1
    return "".join(out)


def _panels(dashboard: dict[str, Any]):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside
