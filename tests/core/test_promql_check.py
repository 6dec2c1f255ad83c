"""Analysis queries checked before they run: template variables the operator provides, and
PromQL that parses, each problem naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from pilotboat.api.rollout import AnalysisTemplate
from pilotboat.core.analysis import DEFAULT_QUERIES, DEFAULT_SAMPLE_QUERIES, SIGNALS, plan_queries
from pilotboat.core.promql_check import (
    TEMPLATE_VARIABLES,
    QueryProblem,
    check_query,
    spec_query_problems,
)

ERRORS = TEMPLATE_VARIABLES["errors"]
LATENCY = TEMPLATE_VARIABLES["latency"]
SELECTOR = 'service="{{ service }}",namespace="{{ namespace }}",version="{{ version }}"'


@pytest.mark.parametrize(
    ("key", "source"),
    [*DEFAULT_QUERIES.items(), *(("sample " + k, q) for k, q in DEFAULT_SAMPLE_QUERIES.items())],
)
def test_the_operators_own_queries_pass(key: str, source: str) -> None:
    assert check_query(source, LATENCY) is None


@pytest.mark.parametrize("source", [
    f'sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[{{{{ interval }}}}]))'
    f" / sum(rate(http_requests_total{{{SELECTOR}}}[{{{{ interval }}}}]))",
    f"max_over_time(rate(process_cpu_seconds_total{{{SELECTOR}}}[1m])[{{{{ interval }}}}:15s])",
    'sum by (pod) (rate(x{service="{{ service }}"}[{{ interval }}])) or vector(0)',
    'label_replace(up{service="{{ service }}"}, "v", "$1", "version", "(.*)")',
    "{% set window = interval %}rate(x[{{ window }}])",
    '{% if version == "v2" %}up{{ "{" }}canary="true"{{ "}" }}{% else %}up{% endif %}',
    'rate(x{path=~"/a(b|c)\\\\("}[5m])  # a comment with ( unbalanced',
    "rate(x[5m] offset 1h) > bool 0",
])  # fmt: skip
def test_valid_queries_pass(source: str) -> None:
    assert check_query(source, ERRORS) is None


@pytest.mark.parametrize(("source", "variables", "problem"), [
    ('sum(rate(x{service="{{ servise }}"}[{{ interval }}]))', ERRORS,
     "unknown template variable 'servise' (known: interval, namespace, revision, service, "
     "version; did you mean 'service'?)"),
    ("histogram_quantile({{ quantile }}, sum by (le) (rate(x_bucket[1m])))", ERRORS,
     "unknown template variable 'quantile' (known: interval, namespace, revision, service, "
     "version)"),
    ("rate(x[{{ window }}])", LATENCY,
     "unknown template variable 'window' (known: interval, namespace, quantile, revision, "
     "service, version)"),
    ('sum(rate(x{service="{{ service }}"}[{{ interval }}])', ERRORS,
     'PromQL parse error at 1:4: unclosed left parenthesis; '
     'rendered: sum(rate(x{service="cart"}[30s])'),
    ("sum(rate(x[5m])))", ERRORS,
     "PromQL parse error at 1:17: unexpected right parenthesis ')'; rendered: sum(rate(x[5m])))"),
    ('rate(x{service="{{ service }}"[5m])', ERRORS,
     "PromQL parse error: unexpected character inside braces: '['"),
    ('rate(x{service="{{ service }}"}[5m]', ERRORS, "PromQL parse error at 1:5: unclosed left "),
    ('x{service="{{ service }}"', ERRORS, "PromQL parse error at 1:2: unexpected end of input "
     "inside braces"),
    ("sum(rate(x[5m]))\n/\nsum(rate(y[5m])", ERRORS,
     "PromQL parse error at 3:4: unclosed left parenthesis; "
     "rendered: sum(rate(x[5m]))\\n/\\nsum(rate(y[5m])"),
    ("rate(x)", ERRORS,
     "PromQL parse error: expected type matrix in call to function 'rate', got vector"),
    ("holt_winters(x[5m], 0.5, 0.5)", ERRORS,
     "PromQL parse error: unknown function with name 'holt_winters'"),
    ("rate(x[{{ interval }}m])", ERRORS, "PromQL parse error: "),
    ("", ERRORS, "PromQL parse error: "),
    ("{% if %}x{% endif %}", ERRORS, "template syntax error at line 1: "),
    ("{{ 1 / 0 }}", ERRORS, "query template: division by zero"),
])  # fmt: skip
def test_invalid_queries_are_refused_saying_why(
    source: str, variables: frozenset[str], problem: str
) -> None:
    found = check_query(source, variables)
    assert found is not None
    message, over_limit = found
    assert message.startswith(problem), message
    assert not over_limit


def test_a_template_over_a_limit_is_marked_so() -> None:
    found = check_query("{{ 'x' * 10**9 }}", ERRORS)
    assert found is not None and found[1]
    assert "MAX_TEMPLATE_OUTPUT" in found[0]


def _signals(**signals: Any) -> dict[str, Any]:
    return {"signals": signals}


@pytest.mark.parametrize(("kind", "spec", "field"), [
    ("Microservice", {"rollout": {"canary": {"analysis": _signals(
        errors={"maxRatio": 0.01, "query": "rate(x{s='{{ servise }}'}[1m])"})}}},
     "spec.rollout.canary.analysis.signals.errors.query"),
    ("RolloutPolicy", {"analysis": _signals(latency={"query": "histogram_quantile(0.9, x"})},
     "spec.analysis.signals.latency.query"),
])  # fmt: skip
def test_a_problem_names_the_field_of_its_kind(kind: str, spec: Any, field: str) -> None:
    (problem,) = spec_query_problems(kind, spec)
    assert problem.field == field
    assert str(problem).startswith(f"{field}: ")


@pytest.mark.parametrize(("kind", "spec"), [
    ("Microservice", {"rollout": {"rolloutPolicyRef": "standard"}}),
    ("Microservice", {"rollout": {"canary": {"analysis": _signals(errors={"maxRatio": 0.1})}}}),
    ("Microservice", None),
    ("Microservice", {"rollout": "not a mapping"}),
    ("RolloutPolicy", {"analysis": {"signals": ["not", "a", "mapping"]}}),
    ("RolloutPolicy", {"analysis": _signals(errors={"query": 42})}),
    ("FeatureFlag", {"analysis": _signals(errors={"query": "rate(x"})}),
])  # fmt: skip
def test_specs_without_queries_to_check_have_no_problems(kind: str, spec: Any) -> None:
    assert spec_query_problems(kind, spec) == []


def test_every_bad_signal_is_reported_in_signal_order() -> None:
    spec = {"analysis": _signals(
        traffic={"query": "rate(x"}, errors={"query": "{{ servise }}"},
        saturation={"query": "max(up)"})}  # fmt: skip
    assert [p.field for p in spec_query_problems("RolloutPolicy", spec)] == [
        "spec.analysis.signals.errors.query", "spec.analysis.signals.traffic.query"]
    assert all(isinstance(p, QueryProblem) for p in spec_query_problems("RolloutPolicy", spec))


_THRESHOLDS = {"errors": {"maxRatio": 0.1}, "latency": {"maxSeconds": 1},
               "traffic": {"minRate": 1}, "saturation": {"max": 1}}  # fmt: skip


@pytest.mark.parametrize("signal", SIGNALS)
def test_the_known_variables_are_the_ones_the_analysis_renders_with(signal: str) -> None:
    """Each name in TEMPLATE_VARIABLES renders in plan_queries, and a name outside does not:
    the checker and the analysis agree."""
    every = " ".join(f"{{{{ {name} }}}}" for name in sorted(TEMPLATE_VARIABLES[signal]))

    def rendered(query: str) -> list[str | None]:
        template = AnalysisTemplate.model_validate(
            {"signals": {signal: {**_THRESHOLDS[signal], "query": query}}})
        plan = plan_queries(template, "cart", "shop", "v2", "v1", "30s")
        return [q.error for q in plan.queries if q.key.startswith(f"{signal}.")]

    assert rendered(every) == [None, None]
    outside = "{{ quantile }}" if signal != "latency" else "{{ step }}"
    assert all(error and "is undefined" in error for error in rendered(outside))
    assert check_query(outside, TEMPLATE_VARIABLES[signal]) is not None
