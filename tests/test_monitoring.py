"""Observability on the recorded graph: every alert names a real metric and says what to do, every Cloud Run
job is covered by a failure alert, production alerts reach someone, and the budget exists only when asked."""

from __future__ import annotations

import json
import logging
import re

import pytest
import structlog

from alle import cache, logs
from components.monitoring import DEAD_LETTER_FILTER, REDIS_FAILURE_FILTER, sql_max_connections
from ops.graph import Graph
from stacks import deployed

ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
LOG_METRIC = "gcp:logging/metric:Metric"
JOB = "gcp:cloudrunv2/job:Job"
BUDGET = "gcp:billing/budget:Budget"
METRIC_TYPE = re.compile(r'metric\.type="([^"]+)"')
#: Google's metric types the program may name (https://cloud.google.com/monitoring/api/metrics_gcp).
GOOGLE_METRICS = {
    "monitoring.googleapis.com/uptime_check/check_passed",
    "run.googleapis.com/request_count",
    "run.googleapis.com/request_latencies",
    "run.googleapis.com/container/instance_count",
    "run.googleapis.com/job/completed_execution_count",
    "cloudsql.googleapis.com/database/cpu/utilization",
    "cloudsql.googleapis.com/database/disk/utilization",
    "cloudsql.googleapis.com/database/postgresql/num_backends",
    "redis.googleapis.com/stats/memory/usage_ratio",
}


def filters(policy: dict[str, object]) -> list[str]:
    """The metric filters of a policy's threshold conditions."""
    found = []
    for condition in policy["conditions"]:  # type: ignore[attr-defined]
        if threshold := condition.get("conditionThreshold"):
            found.append(threshold["filter"])
            found += [threshold["denominatorFilter"]] if "denominatorFilter" in threshold else []
    return found


def known_metrics(graph: Graph) -> set[str]:
    log_metrics = {f"logging.googleapis.com/user/{m.inputs['name']}" for m in graph.of_type(LOG_METRIC)}
    return GOOGLE_METRICS | log_metrics


def test_every_alert_names_an_existing_metric_or_log_based_metric(stack: Graph) -> None:
    alerts = stack.of_type(ALERT)
    assert len(alerts) == 8
    for alert in alerts:
        for filter_ in filters(alert.inputs):
            [metric] = METRIC_TYPE.findall(filter_)
            assert metric in known_metrics(stack), (alert.inputs["displayName"], metric)


def test_every_metric_filter_names_its_resource_type_as_the_monitoring_api_requires(stack: Graph) -> None:
    """The API refuses a threshold condition whose filter does not restrict resource.type
    (googleapis/nodejs-monitoring#46); mocks accept it."""
    conditions = [f for alert in stack.of_type(ALERT) for f in filters(alert.inputs)]
    assert conditions
    assert [f for f in conditions if 'resource.type="' not in f] == []


def test_dead_letters_alert_on_the_workers_log_line_at_most_every_five_minutes(stack: Graph) -> None:
    [alert] = [a for a in stack.of_type(ALERT) if "dead-lettered" in a.inputs["displayName"]]
    [condition] = alert.inputs["conditions"]
    assert condition["conditionMatchedLog"]["filter"] == DEAD_LETTER_FILTER
    assert alert.inputs["alertStrategy"]["notificationRateLimit"]["period"] == "300s"


def test_every_alert_says_what_to_do(stack: Graph) -> None:
    for alert in stack.of_type(ALERT):
        doc = alert.inputs["documentation"]
        assert doc["mimeType"] == "text/markdown"
        assert len(doc["content"]) > 100 and "`" in doc["content"], alert.inputs["displayName"]


def test_every_cloud_run_job_is_covered_by_a_failure_alert(stack: Graph) -> None:
    jobs = {j.inputs["name"] for j in stack.of_type(JOB)}
    assert len(jobs) >= 3
    covered = {
        match
        for alert in stack.of_type(ALERT)
        for f in filters(alert.inputs)
        if "completed_execution_count" in f and 'metric.label.result="failed"' in f
        for match in re.findall(r'resource\.label\.job_name="([^"]+)"', f)
    }
    assert covered == jobs


def test_alerts_route_to_the_stacks_channels(stack: Graph) -> None:
    channels = {f"{c.name}-id" for c in stack.of_type(CHANNEL)}
    expected = {"staging": "dev@alle.app", "production": "oncall@alle.app"}[stack.stack]
    assert [c.inputs["labels"] for c in stack.of_type(CHANNEL)] == [{"email_address": expected}]
    for alert in stack.of_type(ALERT):
        assert alert.inputs["notificationChannels"], alert.inputs["displayName"]
        assert set(alert.inputs["notificationChannels"]) <= channels


def test_production_refuses_to_run_without_an_alert_address() -> None:
    from test_config import error_of

    assert "alle:alertEmails is '[]'; production alerts must reach someone" in error_of("production", alertEmails="[]")


def test_uptime_check_calls_readyz_on_the_public_url_and_its_alert_names_it(stack: Graph) -> None:
    check = stack.one("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig")
    host = {"staging": "staging.alle.app", "production": "alle.app"}[stack.stack]
    assert check.inputs["monitoredResource"] == {
        "type": "uptime_url",
        "labels": {"project_id": f"alle-{stack.stack}", "host": host},
    }
    assert (check.inputs["httpCheck"]["path"], check.inputs["httpCheck"]["useSsl"]) == ("/readyz", True)
    [uptime] = [a for a in stack.of_type(ALERT) if "uptime" in str(a.inputs["conditions"])]
    assert f'metric.label.check_id="{check.name}-x1y2z3"' in filters(uptime.inputs)[0]


def test_without_a_domain_the_uptime_check_calls_the_run_app_host(no_domain: Graph) -> None:
    check = no_domain.one("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig")
    assert check.inputs["monitoredResource"]["labels"]["host"] == "alle-staging-web-abc123-ew.a.run.app"


def test_dead_letters_are_counted_from_the_workers_log_line(stack: Graph) -> None:
    metric = stack.one(LOG_METRIC).inputs
    assert metric["filter"] == 'jsonPayload.message="job dead-lettered" AND severity=ERROR'
    assert metric["labelExtractors"] == {"actor": "EXTRACT(jsonPayload.actor)"}
    assert metric["metricDescriptor"]["metricKind"] == "DELTA"


@pytest.mark.parametrize(
    ("tier", "connections"),
    [
        ("db-f1-micro", 25),
        ("db-g1-small", 50),
        ("db-custom-1-3840", 100),
        ("db-custom-2-7680", 400),
        ("db-custom-8-32768", 600),
        ("db-perf-optimized-N-2", 500),
    ],
)
def test_connection_limit_follows_the_tiers_memory(tier: str, connections: int) -> None:
    assert sql_max_connections(tier) == connections


def test_connection_alert_is_at_80_percent_of_the_tiers_limit(staging: Graph, production: Graph) -> None:
    for graph, limit in ((staging, 50), (production, 400)):
        [database] = [a for a in graph.of_type(ALERT) if "num_backends" in str(a.inputs["conditions"])]
        [connections] = [c for c in database.inputs["conditions"] if c["displayName"] == "connections"]
        assert connections["conditionThreshold"]["thresholdValue"] == int(limit * 0.8)


def test_one_dashboard_with_golden_signals_and_backing_services(stack: Graph) -> None:
    dashboard = json.loads(stack.one("gcp:monitoring/dashboard:Dashboard").inputs["dashboardJson"])
    tiles = dashboard["mosaicLayout"]["tiles"]
    shown = {
        METRIC_TYPE.findall(d["timeSeriesQuery"]["timeSeriesFilter"]["filter"])[0]
        for t in tiles
        for d in t["widget"]["xyChart"]["dataSets"]
    }
    assert shown <= known_metrics(stack)
    assert {
        "run.googleapis.com/request_count",
        "run.googleapis.com/request_latencies",
        "cloudsql.googleapis.com/database/cpu/utilization",
        "redis.googleapis.com/stats/memory/usage_ratio",
    } <= shown
    assert all(t["xPos"] + t["width"] <= 12 for t in tiles)


def test_no_budget_without_a_billing_account(stack: Graph) -> None:
    assert stack.of_type(BUDGET) == []


def test_a_billing_account_gets_a_budget_with_thresholds_that_notify_the_channels() -> None:
    graph = deployed("production", {"alle:billingAccount": "012345-6789AB-CDEF01"})
    budget = graph.one(BUDGET).inputs
    assert budget["billingAccount"] == "012345-6789AB-CDEF01"
    assert budget["budgetFilter"]["projects"] == ["projects/123456789012"]
    assert budget["amount"]["specifiedAmount"] == {"currencyCode": "USD", "units": "1500"}
    assert [(t["thresholdPercent"], t["spendBasis"]) for t in budget["thresholdRules"]] == [
        (0.5, "CURRENT_SPEND"),
        (0.9, "CURRENT_SPEND"),
        (1.0, "CURRENT_SPEND"),
        (1.0, "FORECASTED_SPEND"),
    ]
    channels = [f"{c.name}-id" for c in graph.of_type(CHANNEL)]
    assert budget["allUpdatesRule"]["monitoringNotificationChannels"] == channels


def test_the_apps_log_lines_carry_the_fields_the_dead_letter_metric_reads(capsys: pytest.CaptureFixture[str]) -> None:
    """The worker logs through alle.logs; Cloud Logging lifts `severity` and keeps the rest as jsonPayload."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("INFO")
        logs.get_logger("alle.worker").error("job dead-lettered", actor="send_completion_mail", job_id="m-1")
        entry = json.loads(capsys.readouterr().out.splitlines()[-1])
    finally:
        root.handlers[:], root.level = handlers, level
        structlog.reset_defaults()
    for field, value in re.findall(r'jsonPayload\.(\w+)="([^"]+)"', DEAD_LETTER_FILTER):
        assert entry[field] == value
    [severity] = re.findall(r"severity=(\w+)", DEAD_LETTER_FILTER)
    assert entry["severity"] == severity
    assert entry["actor"] == "send_completion_mail"


def test_the_redis_alert_leaves_out_the_cache_epoch_warning_which_is_a_database_trouble() -> None:
    """The epoch is read from PostgreSQL: a database outage logs that warning on alle.cache, and sent on-call to
    Memorystore."""
    assert f'NOT jsonPayload.message="{cache.EPOCH_UNREADABLE}"' in REDIS_FAILURE_FILTER
    assert 'jsonPayload.logger="alle.cache"' in REDIS_FAILURE_FILTER
