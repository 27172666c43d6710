"""deploy/observability: the Prometheus config, rules and Grafana dashboards parse, hang together, and only
query metrics the code defines (or recording rules alerts.yml defines)."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client import REGISTRY

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
PROMETHEUS = OBSERVABILITY / "prometheus.yml"
RULES = OBSERVABILITY / "alerts.yml"
DASHBOARDS = sorted((OBSERVABILITY / "dashboards").glob("*.json"))
PROVISIONING = OBSERVABILITY / "grafana" / "provisioning"
YAML_FILES = sorted(OBSERVABILITY.rglob("*.yml")) + sorted(OBSERVABILITY.rglob("*.yaml"))

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEVERITIES = {"critical", "warning", "info"}
PANEL_TYPES = {"timeseries", "stat", "gauge"}
EXPECTED_DASHBOARDS = {
    "system.json": "Chat4All / System",
    "api.json": "Chat4All / API",
    "pipeline.json": "Chat4All / Pipeline",
    "connectors.json": "Chat4All / Connectors",
}
EXPECTED_ALERTS = {
    "Chat4AllApiDown",
    "Chat4AllConsumerLagHigh",
    "Chat4AllDeadLetters",
    "Chat4AllWebhookDeadLetters",
    "Chat4AllCircuitOpen",
    "Chat4AllDeliveryLatencyHigh",
    "Chat4AllHttp5xxRatioHigh",
    "Chat4AllHttpLatencyHigh",
    "Chat4AllOutboxBacklogHigh",
}

# The modules that define the metric families; any other module of ours that builds a Counter, Gauge,
# Histogram or Summary is found by scanning the source and imported too.
METRIC_MODULES = (
    "entrypoints.http.metrics",
    "entrypoints.workers.metrics",
    "entrypoints.limits",
    "entrypoints.channels",
    "entrypoints.http.webhooks",
    "entrypoints.grpc.metrics",
    "entrypoints.workers.runner",
)
SOURCE_PACKAGES = ("domain", "application", "adapters", "entrypoints")
_METRIC_CONSTRUCTOR = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary)\(")
# Series names that are not ours but fine to query: Prometheus' own per-target series.
PROMETHEUS_SERIES = {"up"}

# --- PromQL: the metric names an expression selects -------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_GRAFANA_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names ``expr`` selects: identifiers that are no function or aggregation
    (followed by ``(``), keyword, label name (in ``{...}`` or a ``by``/``on``/... list), string or duration."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    text = _GRAFANA_VARIABLES.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for ch in _STRINGS.sub('""', expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


# --- Loading ----------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@cache
def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


@cache
def dashboard(path: Path) -> Any:
    return json.loads(path.read_text())


def targets(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield from panel.get("targets", [])


def expressions(source: str) -> list[str]:
    if source == RULES.name:
        return [r["expr"] for r in rules()]
    return [t["expr"] for t in targets(dashboard(OBSERVABILITY / "dashboards" / source))]


def _source_modules() -> Iterator[str]:
    for package in SOURCE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py" or "_generated" in path.parts:
                continue
            text = path.read_text()
            if "prometheus_client" in text and _METRIC_CONSTRUCTOR.search(text):
                yield ".".join(path.relative_to(ROOT).with_suffix("").parts)


@cache
def defined_series() -> frozenset[str]:
    """Every series name (``_total``, ``_bucket``, ``_sum``, ``_count``, ``_created`` ... forms) of every
    collector our metric modules register."""
    for module in (*METRIC_MODULES, *_source_modules()):
        importlib.import_module(module)
    return frozenset(REGISTRY._names_to_collectors)


# --- The PromQL extractor itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (le, route) (rate(chat4all_x_bucket{route!~"a|b", le="+Inf"}[5m]))',
            {"chat4all_x_bucket"},
        ),
        (
            '(sum(rate(a_total{status=~"5.."}[5m])) or vector(0)) / sum(rate(a_total[5m])) > 0.01 and b > 1e3',
            {"a_total", "b"},
        ),
        ('label_replace(rate(m[5m]), "x", "${1}xx", "status", "(.).*")', {"m"}),
        ('max by (channel) (up{job="x"} offset 5m) == bool 1', {"up"}),
        (
            "sum(increase(m[$__rate_interval])) / ignoring (pod) group_left (channel) chat4all:foo:sum",
            {"m", "chat4all:foo:sum"},
        ),
        ("sum(rate(m[5m])) without (instance) unless on(job) n", {"m", "n"}),
        ("histogram_quantile(0.99, sum(rate(h_bucket[$__range])) by (le))", {"h_bucket"}),
        ('{__name__="x"}', set()),
    ],
)
def test_metric_names_are_extracted_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_registry_walk_finds_the_code_s_families() -> None:
    expected = {
        "chat4all_http_requests_total",
        "chat4all_http_request_duration_seconds_bucket",
        "chat4all_circuit_open",
        "chat4all_rate_limited_total",
        "chat4all_inbound_messages_total",
        "chat4all_webhook_refusals_total",
    }
    assert expected - defined_series() == set()


# --- YAML files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(OBSERVABILITY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert isinstance(load_yaml(path), dict)


def test_the_expected_files_exist() -> None:
    expected = [
        PROMETHEUS,
        RULES,
        OBSERVABILITY / "README.md",
        PROVISIONING / "datasources" / "prometheus.yml",
        PROVISIONING / "dashboards" / "chat4all.yml",
        *(OBSERVABILITY / "dashboards" / name for name in EXPECTED_DASHBOARDS),
    ]
    assert [p for p in expected if not p.is_file()] == []


def test_prometheus_scrapes_the_http_api_and_loads_the_rules() -> None:
    config = load_yaml(PROMETHEUS)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    assert "alerting" not in config, "the alertmanager stanza stays commented out"
    assert config["rule_files"] == ["alerts.yml"]
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).is_file()
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "chat4all"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["chat4all-api:8000"]
    text = PROMETHEUS.read_text()
    assert "127.0.0.1:8000" in text
    assert "kubernetes_sd_configs" in text


def test_rules_have_the_expected_structure() -> None:
    groups = load_yaml(RULES)["groups"]
    assert groups
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names)), "group names are unique"
    for group in groups:
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert isinstance(rule.get("expr"), str | int | float), rule
            assert str(rule["expr"]).strip(), rule
            assert balanced(str(rule["expr"])), rule
            if "record" in rule:
                assert set(rule) <= {"record", "expr", "labels"}, rule
                assert re.fullmatch(r"chat4all:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]
            else:
                assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
                assert re.fullmatch(r"Chat4All[A-Za-z0-9]+", rule["alert"]), rule
                assert re.fullmatch(r"(\d+(ms|[smhdwy]))+", rule["for"]), rule
                assert rule["labels"]["severity"] in SEVERITIES, rule
                assert rule["annotations"]["summary"].strip(), rule
                assert rule["annotations"]["description"].strip(), rule


def test_rule_names_are_unique_and_the_expected_alerts_exist() -> None:
    names = [r.get("alert") or r["record"] for r in rules()]
    assert len(names) == len(set(names))
    assert EXPECTED_ALERTS - {r["alert"] for r in alerts()} == set()
    assert any(r["labels"]["severity"] == "critical" for r in alerts())


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_alert_annotations_template_only_labels_the_alert_has(rule: dict[str, Any]) -> None:
    expr = rule["expr"]
    for text in rule["annotations"].values():
        assert text.count("{{") == text.count("}}"), text
        for action in re.findall(r"\{\{(.*?)\}\}", text):
            assert re.fullmatch(r"\s*\$(value|labels\.\w+)(\s*\|\s*\w+)*\s*", action), action
        for label in re.findall(r"\$labels\.(\w+)", text):
            # a label survives an aggregation only if named in its `by (...)`; `instance` comes from the target.
            assert label in expr or (label == "instance" and "up{" in expr), (label, expr)


def test_grafana_provisioning() -> None:
    datasources = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["uid"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    providers = load_yaml(PROVISIONING / "dashboards" / "chat4all.yml")
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/chat4all"


# --- Dashboards -------------------------------------------------------------------------------------------


def test_the_dashboards_are_the_expected_ones_with_unique_uids() -> None:
    boards = {p.name: dashboard(p) for p in DASHBOARDS}
    assert {name: b["title"] for name, b in boards.items()} == EXPECTED_DASHBOARDS
    uids = [b["uid"] for b in boards.values()]
    assert all(isinstance(uid, str) and 0 < len(uid) <= 40 for uid in uids)
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_pretty_printed_json(path: Path) -> None:
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_settings(path: Path) -> None:
    board = dashboard(path)
    assert board["schemaVersion"] >= 36
    assert "chat4all" in board["tags"]
    assert board["time"] == {"from": "now-1h", "to": "now"}
    assert board["refresh"] == "30s"
    variables = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert len(variables) == 1
    assert variables[0]["type"] == "datasource"
    assert variables[0]["query"] == "prometheus"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels(path: Path) -> None:
    panels = dashboard(path)["panels"]
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        where = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel["type"] in PANEL_TYPES, where
        assert panel.get("title"), where
        assert panel["datasource"] == DATASOURCE, where
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), where
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0, where
        assert grid["x"] + grid["w"] <= 24, where
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{where} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
        assert panel["targets"], where
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert balanced(target["expr"]), (where, target["expr"])
            assert isinstance(target["legendFormat"], str), where
            assert target.get("datasource", DATASOURCE) == DATASOURCE, where


# --- Every metric queried exists --------------------------------------------------------------------------


@pytest.mark.parametrize("source", [RULES.name, *(p.name for p in DASHBOARDS)])
def test_every_metric_queried_is_defined(source: str) -> None:
    """Recording rules of alerts.yml, Prometheus' ``up``, or a ``chat4all_*`` series the code registers."""
    known = defined_series()
    missing: dict[str, list[str]] = {}
    for expr in expressions(source):
        for name in sorted(metric_names(expr)):
            if name in recorded() or name in PROMETHEUS_SERIES:
                continue
            if name.startswith("chat4all_") and name in known:
                continue
            missing.setdefault(name, []).append(" ".join(expr.split()))
    assert missing == {}, f"{source} queries metrics nothing defines: {sorted(missing)}"
