"""Dashboard and alert rules: valid PromQL over metrics the services really export."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import promql_parser
import pytest
from prometheus_client.metrics import MetricWrapperBase

from tests.deploy.conftest import CHART, OBSERVABILITY, load_yaml

RULES = OBSERVABILITY / "prometheus-rules.yaml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
#: The metrics module of every service (STYLE.md: one metrics.py per service).
METRICS_MODULES = ("ingest.metrics", "workers.recorder.metrics", "workers.analyzer.metrics",
                   "control.metrics")
#: Sample names a metric family of each type exposes.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}
#: Labels that Prometheus or the Kubernetes service discovery adds, or PromQL itself uses.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "service", "le"}
NAME = re.compile(r"\bcallrec_[a-z0-9_]+")
GRAFANA_VARIABLES = re.compile(r"\$(__rate_interval|__interval|__range)\b")


@pytest.fixture(scope="module")
def exported() -> dict[str, frozenset[str]]:
    """Every sample name the services export, with the labels of its metric."""
    labels: dict[str, frozenset[str]] = {}
    for module_name in METRICS_MODULES:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase) and not value._labelvalues:
                labels[value._name] = frozenset(value._labelnames)
    names: dict[str, frozenset[str]] = {}
    for family in prometheus_client.REGISTRY.collect():
        if not family.name.startswith("callrec_"):
            continue
        # Custom collectors (ingest's per-message counts) have no wrapper object: their
        # labels are those of the samples they yield.
        sampled = {name for sample in family.samples for name in sample.labels}
        for suffix in SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            names[family.name + suffix] = (labels.get(family.name, frozenset()) | extra
                                           | (sampled - {"le"}))
    return names


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            yield f"{panel['title']}/{target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["definition"]


def all_exprs() -> list[tuple[str, str]]:
    return [("rules: " + n, e) for n, e in rule_exprs()] + [
        ("dashboard: " + n, e) for n, e in dashboard_exprs()
    ]


def parse(expr: str) -> promql_parser.Expr:
    """Parse PromQL; Grafana's range variables become a plain duration first."""
    return promql_parser.parse(GRAFANA_VARIABLES.sub("5m", expr))


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    if expr.startswith("label_values("):  # Grafana variable query: label_values(metric, label)
        expr = expr[len("label_values(") :].rsplit(",", 1)[0]
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(parse(expr), visit)
    return found


@pytest.mark.parametrize(("where", "expr"), all_exprs())
def test_expression_is_valid_promql(where: str, expr: str) -> None:
    if expr.startswith("label_values("):
        return  # checked through its metric in test_metric_names_are_exported
    parse(expr)


@pytest.mark.parametrize(("where", "expr"), all_exprs())
def test_metric_names_are_exported(
    exported: dict[str, frozenset[str]], where: str, expr: str
) -> None:
    used = set(NAME.findall(expr))
    assert used, f"{where} uses no callrec metric"
    missing = used - set(exported)
    assert not missing, f"{where}: not exported by {METRICS_MODULES}: {sorted(missing)}"
    # The parser sees the same names as the regex (nothing hides in strings or comments).
    assert {s.name for s in selectors(expr)} == used


@pytest.mark.parametrize(("where", "expr"), all_exprs())
def test_label_matchers_name_real_labels(
    exported: dict[str, frozenset[str]], where: str, expr: str
) -> None:
    for selector in selectors(expr):
        name = str(selector.name)
        for matcher in selector.matchers.matchers:
            if matcher.name in TARGET_LABELS:
                continue
            assert matcher.name in exported[name], (
                f"{where}: {name} has no label {matcher.name!r} (it has {sorted(exported[name])})"
            )


def grouping_problems(exported: dict[str, frozenset[str]], expr: str) -> list[str]:
    """Labels an expression groups or matches by (``by (...)``, ``on (...)``,
    ``label_values(metric, label)``) that a metric it reads does not have: Prometheus
    raises no error, the panel or alert silently gets one series where it meant several."""
    problems: list[str] = []

    def require(labels: list[str], node: promql_parser.Expr, what: str) -> None:
        for selector in selectors_of(node):
            name = str(selector.name)
            for label in labels:
                # `le` is grouped by on purpose only over buckets, which have it.
                if label in TARGET_LABELS - {"le"}:
                    continue
                if label not in exported.get(name, frozenset()):
                    problems.append(
                        f"{what} ({label}): {name} has no label {label!r} "
                        f"(it has {sorted(exported.get(name, frozenset()))})"
                    )

    if expr.startswith("label_values("):
        metric, label = expr[len("label_values(") : -1].rsplit(",", 1)
        require([label.strip()], parse(metric), "label_values")
        return problems

    def visit(node: object) -> None:
        if (
            isinstance(node, promql_parser.AggregateExpr)
            and node.modifier is not None
            and node.modifier.type == promql_parser.AggModifierType.By
        ):
            require(list(node.modifier.labels), node.expr, "by")
        if isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            if matching is not None and matching.type == promql_parser.LabelModifierType.Include:
                require(list(matching.labels), node.lhs, "on")
                require(list(matching.labels), node.rhs, "on")

    promql_parser.walk(parse(expr), visit)
    return problems


def selectors_of(node: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(child: object) -> None:
        if isinstance(child, promql_parser.VectorSelector):
            found.append(child)

    promql_parser.walk(node, visit)
    return found


@pytest.mark.parametrize(("where", "expr"), all_exprs())
def test_grouping_labels_name_real_labels(
    exported: dict[str, frozenset[str]], where: str, expr: str
) -> None:
    problems = grouping_problems(exported, expr)
    assert not problems, f"{where}: {problems}"


def test_grouping_check_finds_a_missing_label(exported: dict[str, frozenset[str]]) -> None:
    """The check above would fail on the mistakes it is there for."""
    good = "sum by (namespace, le) (rate(callrec_recorder_finalize_latency_seconds_bucket[5m]))"
    assert grouping_problems(exported, good) == []
    assert grouping_problems(exported, "sum by (reason) (callrec_ingest_ready)")
    assert grouping_problems(exported, "sum by (le) (rate(callrec_ingest_connections_total[5m]))")
    on = "callrec_ingest_ready * on (partition) group_left callrec_recorder_consumer_lag_records"
    assert [p.split(":")[0] for p in grouping_problems(exported, on)] == ["on (partition)"]
    assert grouping_problems(exported, "label_values(callrec_ingest_ready, call_id)")


def test_alerts_cover_the_issue(exported: dict[str, frozenset[str]]) -> None:
    """Ingest errors, backpressure, recorder lag, finalize latency, analyzer failures."""
    exprs = " ".join(expr for _, expr in rule_exprs())
    for metric in (
        "callrec_ingest_produce_failures_total",
        "callrec_ingest_backpressure_seconds_total",
        "callrec_recorder_consumer_lag_records",
        "callrec_recorder_finalize_latency_seconds_bucket",
        "callrec_analyzer_failures_total",
        "callrec_control_stream_starts_total",
        "callrec_control_webhook_events_total",
    ):
        assert metric in exprs, metric


def test_rules_are_well_formed() -> None:
    names = set()
    for group in load_yaml(RULES)["groups"]:
        assert group["name"].startswith("callrec-")
        for rule in group["rules"]:
            assert rule["alert"] not in names, f"duplicate alert {rule['alert']}"
            names.add(rule["alert"])
            assert re.fullmatch(r"Callrec[A-Za-z0-9]+", rule["alert"])
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = list(dashboard_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"], panel["title"]


@pytest.mark.parametrize("name", ["prometheus-rules.yaml", "grafana-dashboard.json"])
def test_chart_copies_are_identical(name: str) -> None:
    """helm/callrec/files/ holds copies (Helm reads files only inside the chart)."""
    chart_copy: Path = CHART / "files" / name
    assert chart_copy.read_bytes() == (OBSERVABILITY / name).read_bytes(), (
        f"cp deploy/observability/{name} helm/callrec/files/{name}"
    )
