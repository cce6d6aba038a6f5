"""The estimated monthly cost in the offline plan: from a dated price table, following the declared sizing."""

from __future__ import annotations

import pytest

from ops import cli, cost, plan
from ops.graph import Graph
from stacks import deployed


def test_the_price_table_says_when_and_where_its_prices_come_from() -> None:
    table = cost.prices()
    assert str(table["date"]) == "2026-11-26"
    assert all(s.startswith("https://cloud.google.com/") for s in table["sources"])
    assert table["currency"] == "USD"


def test_plan_stack_prints_the_estimate_total_and_biggest_items(production: Graph) -> None:
    text = plan.render(production)
    block = text[text.index("Estimated monthly cost:") :]
    assert "an estimate from list prices of 2026-11-26" in block
    lines = block.splitlines()[2:]
    assert len(lines) == 5
    assert lines[0].endswith("Cloud SQL instance: db-custom-2-7680 HA")
    amounts = [float(line.split()[0].lstrip("$").replace(",", "")) for line in lines]
    assert amounts == sorted(amounts, reverse=True)
    assert f"${cost.total(production):,.2f}" in block.splitlines()[0]


def test_prices_follow_the_declared_sizing(staging: Graph, production: Graph) -> None:
    by_kind = {i.kind: i.monthly for i in cost.items(production)}
    hours = 730
    assert by_kind["Cloud SQL instance"] == pytest.approx((2 * 0.0413 + 7.5 * 0.007) * hours * 2)
    assert by_kind["Cloud SQL storage"] == pytest.approx(50 * 0.17 * 2)
    assert by_kind["Memorystore"] == pytest.approx(5 * 0.054 * hours)
    assert by_kind["Cloud Run web"] == pytest.approx((2 * 0.0000025 + 1 * 0.0000025) * 3600 * hours)
    assert by_kind["Cloud Run worker pool"] == pytest.approx(2 * (0.000018 + 0.000002) * 3600 * hours)
    assert by_kind["Load balancer"] == pytest.approx(2 * 0.025 * hours)
    assert by_kind["Cloud Armor"] == pytest.approx(5 + 10)
    assert "Cloud Run web" not in {i.kind for i in cost.items(staging)}, "no minimum instances, no idle cost"


def test_no_domain_costs_no_load_balancer_or_armor(no_domain: Graph) -> None:
    kinds = {i.kind for i in cost.items(no_domain)}
    assert not {"Load balancer", "Cloud Armor"} & kinds


def test_plan_diff_prints_what_a_change_adds_and_what_it_saves(staging: Graph) -> None:
    bigger = deployed("staging", {"alle:redisMemoryGb": "5"})
    adds = cost.render_diff(staging, bigger)
    assert f"adds ${5 * 0.027 * 730 - 1 * 0.049 * 730:,.2f}" in adds
    assert "Memorystore: BASIC 1 GB → BASIC 5 GB" in adds
    assert len(adds.strip().splitlines()) == 3, "only what changed is listed"
    assert "saves" in cost.render_diff(bigger, staging)


def test_plan_diff_between_the_stacks_ends_with_the_cost_difference(staging: Graph, production: Graph) -> None:
    text = plan.render_diff(staging, production)
    assert "Estimated monthly cost: staging $" in text
    assert "+161.33  Memorystore: BASIC 1 GB → STANDARD_HA 5 GB" in text


def test_plan_what_if_prints_what_a_config_change_adds(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "--stack", "staging", "--set", "alle:webMinInstances=2"]) == 0
    out = capsys.readouterr().out
    assert "instances: 0–3  →  2–3" in out
    idle = 2 * (1 * 0.0000025 + 0.5 * 0.0000025) * 3600 * 730
    assert f"(adds ${idle:,.2f})" in out
    assert f"+{idle:,.2f}  Cloud Run web: none → 2 minimum instance(s), idle" in out


def test_plan_what_if_refuses_a_change_that_is_not_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["plan", "--stack", "staging", "--set", "webMinInstances"])
    assert "is not KEY=VALUE" in capsys.readouterr().err
