"""What watches a stack in Cloud Monitoring: an uptime check on /readyz, alert policies that say what to do,
a log-based metric for dead-lettered jobs (charted; its alert matches the log line), email notification channels
and one dashboard.

Metric types are Google's (https://cloud.google.com/monitoring/api/metrics_gcp); the filters follow
https://cloud.google.com/monitoring/api/v3/filters. Thresholds are set here, once for both stacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from components.config import ObservabilityConfig, max_connections

mon = gcp.monitoring

UPTIME = "monitoring.googleapis.com/uptime_check/check_passed"
REQUESTS = "run.googleapis.com/request_count"
LATENCIES = "run.googleapis.com/request_latencies"
JOB_EXECUTIONS = "run.googleapis.com/job/completed_execution_count"
SQL_CPU = "cloudsql.googleapis.com/database/cpu/utilization"
SQL_DISK = "cloudsql.googleapis.com/database/disk/utilization"
SQL_BACKENDS = "cloudsql.googleapis.com/database/postgresql/num_backends"
REDIS_MEMORY = "redis.googleapis.com/stats/memory/usage_ratio"
INSTANCES = "run.googleapis.com/container/instance_count"
#: The worker's structured log line when a job exhausted its retries (app: alle/worker).
DEAD_LETTER_FILTER = 'jsonPayload.message="job dead-lettered" AND severity=ERROR'
#: The app's warnings when a Redis call failed and it went on without the cache (app: alle/cache.py), but for the
#: one about the cache epoch, which is read from PostgreSQL.
REDIS_FAILURE_FILTER = (
    'jsonPayload.logger="alle.cache" AND severity=WARNING AND '
    'NOT jsonPayload.message="could not read the cache epoch; bypassing the cache"'
)

ERROR_RATIO = 0.05
LATENCY_P99_MS = 2000
SQL_CPU_RATIO = 0.8
SQL_DISK_RATIO = 0.85
SQL_CONNECTIONS_RATIO = 0.8
REDIS_MEMORY_RATIO = 0.8


def sql_max_connections(tier: str) -> int:
    """Cloud SQL for PostgreSQL's default max_connections for the tier (components/config.py); 100 if unknown."""
    limit = max_connections(tier)
    return 100 if limit is None else limit


@dataclass
class MonitoringArgs:
    project: str
    region: str
    prefix: str
    config: ObservabilityConfig
    #: Host the uptime check calls over HTTPS: the custom domain, or the run.app host without one.
    public_host: pulumi.Input[str]
    web_service: str
    jobs: Mapping[str, pulumi.Input[str]]
    sql_database_id: pulumi.Input[str]
    sql_tier: str
    redis_instance_id: pulumi.Input[str]
    depends_on: list[pulumi.Resource]


def _log_match(display: str, filter_: str) -> mon.AlertPolicyConditionArgs:
    # No label extractors: each combination of their values would be notified on its own.
    return mon.AlertPolicyConditionArgs(
        display_name=display, condition_matched_log=mon.AlertPolicyConditionConditionMatchedLogArgs(filter=filter_)
    )


def _log_match_strategy() -> mon.AlertPolicyAlertStrategyArgs:
    """Required of an alert on log lines: at most one notification per period."""
    return mon.AlertPolicyAlertStrategyArgs(
        notification_rate_limit=mon.AlertPolicyAlertStrategyNotificationRateLimitArgs(period="300s"),
        auto_close="1800s",
    )


def _threshold(
    display: str,
    filter_: pulumi.Input[str],
    threshold: float,
    aligner: str,
    reducer: str = "REDUCE_SUM",
    duration: str = "300s",
    denominator: pulumi.Input[str] | None = None,
) -> mon.AlertPolicyConditionArgs:
    aggregation = [
        mon.AlertPolicyConditionConditionThresholdAggregationArgs(
            alignment_period="60s", per_series_aligner=aligner, cross_series_reducer=reducer
        )
    ]
    return mon.AlertPolicyConditionArgs(
        display_name=display,
        condition_threshold=mon.AlertPolicyConditionConditionThresholdArgs(
            filter=filter_,
            comparison="COMPARISON_GT",
            threshold_value=threshold,
            duration=duration,
            aggregations=aggregation,
            denominator_filter=denominator,
            denominator_aggregations=[
                mon.AlertPolicyConditionConditionThresholdDenominatorAggregationArgs(
                    alignment_period="60s", per_series_aligner=aligner, cross_series_reducer=reducer
                )
            ]
            if denominator
            else None,
            trigger=mon.AlertPolicyConditionConditionThresholdTriggerArgs(count=1),
        ),
    )


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:monitoring:Monitoring", name, None, opts)
        self._args = args
        self._child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        # Named by position, so the plan pairs each stack's first address with the other's.
        self.channels = [
            mon.NotificationChannel(
                f"{name}-alerts-{index}",
                mon.NotificationChannelArgs(
                    project=args.project,
                    display_name=f"Alle {args.prefix}: {email}",
                    type="email",
                    labels={"email_address": email},
                ),
                opts=self._child,
            )
            for index, email in enumerate(args.config.alert_emails)
        ]
        self.channel_ids: list[pulumi.Output[str]] = [c.id for c in self.channels]
        # https://cloud.google.com/monitoring/uptime-checks#create
        self.uptime = mon.UptimeCheckConfig(
            f"{name}-uptime",
            mon.UptimeCheckConfigArgs(
                project=args.project,
                display_name=f"{args.prefix} /readyz",
                period="60s",
                timeout="10s",
                http_check=mon.UptimeCheckConfigHttpCheckArgs(
                    path="/readyz", port=443, use_ssl=True, validate_ssl=True, request_method="GET"
                ),
                monitored_resource=mon.UptimeCheckConfigMonitoredResourceArgs(
                    type="uptime_url", labels={"project_id": args.project, "host": args.public_host}
                ),
            ),
            opts=self._child,
        )
        self.dead_letters = gcp.logging.Metric(
            f"{name}-dead-lettered",
            gcp.logging.MetricArgs(
                project=args.project,
                name=f"{args.prefix}-dead-lettered-jobs",
                description="Jobs the worker gave up on after their last retry (alle dead-jobs list).",
                filter=DEAD_LETTER_FILTER,
                metric_descriptor=gcp.logging.MetricMetricDescriptorArgs(
                    metric_kind="DELTA",
                    value_type="INT64",
                    unit="1",
                    labels=[gcp.logging.MetricMetricDescriptorLabelArgs(key="actor", value_type="STRING")],
                ),
                label_extractors={"actor": "EXTRACT(jsonPayload.actor)"},
            ),
            opts=self._child,
        )
        self.policies = self._policies(name)
        self.dashboard = mon.Dashboard(
            f"{name}-dashboard",
            mon.DashboardArgs(project=args.project, dashboard_json=pulumi.Output.json_dumps(self._dashboard())),
            opts=self._child,
        )
        self.register_outputs({"uptime_check_id": self.uptime.uptime_check_id})

    def _policy(
        self,
        name: str,
        display: str,
        doc: str,
        conditions: list[mon.AlertPolicyConditionArgs],
        severity: str,
        strategy: mon.AlertPolicyAlertStrategyArgs | None = None,
    ) -> mon.AlertPolicy:
        return mon.AlertPolicy(
            name,
            mon.AlertPolicyArgs(
                project=self._args.project,
                display_name=f"{self._args.prefix}: {display}",
                combiner="OR",
                severity=severity,
                conditions=conditions,
                notification_channels=self.channel_ids,
                documentation=mon.AlertPolicyDocumentationArgs(mime_type="text/markdown", content=doc),
                alert_strategy=strategy,
            ),
            opts=self._child,
        )

    def _policies(self, name: str) -> dict[str, mon.AlertPolicy]:
        a = self._args
        run_filter = (
            f'resource.type="cloud_run_revision" AND resource.label.service_name="{a.web_service}" AND '
            f'metric.type="{REQUESTS}"'
        )
        sql = pulumi.Output.concat(
            'resource.type="cloudsql_database" AND resource.label.database_id="', a.sql_database_id, '"'
        )
        max_connections = sql_max_connections(a.sql_tier)
        policies = {
            "uptime": self._policy(
                f"{name}-alert-uptime",
                "web is not ready",
                f"`/readyz` on `{a.prefix}` failed from several regions. Check the web service's logs and revisions "
                "(`bin/alle-ops status`) and Cloud SQL (`/readyz` fails for PostgreSQL, not for Redis). If a release "
                "just took traffic, "
                f"roll it back: `bin/alle-ops traffic rollback --stack {a.prefix.removeprefix('alle-')}`.",
                [
                    _threshold(
                        "uptime check failing",
                        pulumi.Output.concat(
                            f'metric.type="{UPTIME}" AND resource.type="uptime_url" AND metric.label.check_id="',
                            self.uptime.uptime_check_id,
                            '"',
                        ),
                        1,
                        "ALIGN_NEXT_OLDER",
                        "REDUCE_COUNT_FALSE",
                        duration="60s",
                    )
                ],
                "CRITICAL",
            ),
            "errors": self._policy(
                f"{name}-alert-5xx",
                "web 5xx ratio",
                f"More than {ERROR_RATIO:.0%} of web requests answer 5xx. Read the web logs for the traceback; if "
                "the errors started with a release, move its traffic back (`bin/alle-ops traffic rollback`).",
                [
                    _threshold(
                        "5xx ratio",
                        f'{run_filter} AND metric.label.response_code_class="5xx"',
                        ERROR_RATIO,
                        "ALIGN_RATE",
                        denominator=run_filter,
                    )
                ],
                "ERROR",
            ),
            "latency": self._policy(
                f"{name}-alert-latency",
                "web p99 latency",
                f"The 99th percentile of web request latency is above {LATENCY_P99_MS} ms. Check Cloud SQL CPU and "
                "connections and Query Insights on the dashboard, and whether web runs at `alle:webMaxInstances`; "
                "raise that, or `alle:dbTier` when the database is the bottleneck.",
                [
                    _threshold(
                        "p99 latency",
                        f'resource.type="cloud_run_revision" AND resource.label.service_name="{a.web_service}" AND '
                        f'metric.type="{LATENCIES}"',
                        LATENCY_P99_MS,
                        "ALIGN_PERCENTILE_99",
                        "REDUCE_MAX",
                    )
                ],
                "WARNING",
            ),
            "jobs": self._policy(
                f"{name}-alert-jobs",
                "a Cloud Run job failed",
                "An execution of a Cloud Run job failed. A failed `migrate` stopped the release: the previous "
                "revision still serves; read the execution's logs (`bin/alle-ops job run migrate` prints the link), "
                "fix forward and deploy again. For cleanup and report jobs, rerun with `bin/alle-ops job run`.",
                [
                    _threshold(
                        f"{command} failed",
                        pulumi.Output.concat(
                            f'metric.type="{JOB_EXECUTIONS}" AND resource.type="cloud_run_job" AND '
                            'metric.label.result="failed" AND resource.label.job_name="',
                            job,
                            '"',
                        ),
                        0,
                        "ALIGN_DELTA",
                        duration="0s",
                    )
                    for command, job in sorted(a.jobs.items())
                ],
                "ERROR",
            ),
            "dead-letters": self._policy(
                f"{name}-alert-dead-letters",
                "jobs dead-lettered",
                "The worker gave up on a job after its last retry. List them with `bin/alle-ops job run "
                "generate-report --stack STACK -- dead-jobs list`, fix the cause, then `-- dead-jobs retry`.",
                # On the log line itself, not on the log-based metric (which the dashboard charts): a threshold on
                # that metric must name its resource.type, and is refused for up to 10 minutes after the metric is
                # created, which is within the same `pulumi up` (hashicorp/terraform-provider-google#11102).
                [_log_match("dead-lettered jobs", DEAD_LETTER_FILTER)],
                "ERROR",
                _log_match_strategy(),
            ),
            "redis": self._policy(
                f"{name}-alert-redis",
                "Redis unreachable",
                "The app could not reach Memorystore. The API keeps serving from PostgreSQL, slower, and `/readyz` "
                "says `degraded`; jobs the web accepted wait in PostgreSQL and the worker's sweep enqueues them once "
                "Redis is back. Check the instance's state and maintenance in the console, and the `alle.cache` "
                "warnings for the error.",
                [_log_match("cache warnings", REDIS_FAILURE_FILTER)],
                "WARNING",
                _log_match_strategy(),
            ),
            "database": self._policy(
                f"{name}-alert-database",
                "Cloud SQL near its limits",
                f"Cloud SQL is above {SQL_CPU_RATIO:.0%} CPU, {SQL_DISK_RATIO:.0%} disk, or "
                f"{SQL_CONNECTIONS_RATIO:.0%} of its {max_connections} connections. Check Query Insights for the "
                "queries responsible; raise `alle:dbTier` (connections follow memory) or `alle:dbDiskSizeGb`.",
                [
                    _threshold(
                        "CPU",
                        pulumi.Output.concat(sql, f' AND metric.type="{SQL_CPU}"'),
                        SQL_CPU_RATIO,
                        "ALIGN_MEAN",
                        "REDUCE_MAX",
                        "600s",
                    ),
                    _threshold(
                        "disk",
                        pulumi.Output.concat(sql, f' AND metric.type="{SQL_DISK}"'),
                        SQL_DISK_RATIO,
                        "ALIGN_MEAN",
                        "REDUCE_MAX",
                    ),
                    _threshold(
                        "connections",
                        pulumi.Output.concat(sql, f' AND metric.type="{SQL_BACKENDS}"'),
                        int(max_connections * SQL_CONNECTIONS_RATIO),
                        "ALIGN_MAX",
                    ),
                ],
                "ERROR",
            ),
            "cache": self._policy(
                f"{name}-alert-cache",
                "Memorystore memory",
                f"Memorystore uses more than {REDIS_MEMORY_RATIO:.0%} of its memory; the queue may start refusing "
                "jobs. Check the queue depth (`dead-jobs list`), then raise `alle:redisMemoryGb`.",
                [
                    _threshold(
                        "memory usage ratio",
                        pulumi.Output.concat(
                            f'metric.type="{REDIS_MEMORY}" AND resource.type="redis_instance" AND '
                            'resource.label.instance_id="',
                            a.redis_instance_id,
                            '"',
                        ),
                        REDIS_MEMORY_RATIO,
                        "ALIGN_MEAN",
                        "REDUCE_MAX",
                    )
                ],
                "WARNING",
            ),
        }
        return policies

    def _dashboard(self) -> dict[str, Any]:
        """Golden signals of web (traffic, errors, latency, saturation), then the backing services."""
        a = self._args
        web = f'resource.type="cloud_run_revision" AND resource.label.service_name="{a.web_service}"'
        sql = pulumi.Output.concat(
            'resource.type="cloudsql_database" AND resource.label.database_id="', a.sql_database_id, '"'
        )
        redis = pulumi.Output.concat(
            'resource.type="redis_instance" AND resource.label.instance_id="', a.redis_instance_id, '"'
        )
        charts: list[tuple[str, pulumi.Input[str], str, str]] = [
            ("Requests by response class", f'{web} AND metric.type="{REQUESTS}"', "ALIGN_RATE", "REDUCE_SUM"),
            (
                "5xx responses",
                f'{web} AND metric.type="{REQUESTS}" AND metric.label.response_code_class="5xx"',
                "ALIGN_RATE",
                "REDUCE_SUM",
            ),
            ("p99 latency (ms)", f'{web} AND metric.type="{LATENCIES}"', "ALIGN_PERCENTILE_99", "REDUCE_MAX"),
            ("Web instances", f'{web} AND metric.type="{INSTANCES}"', "ALIGN_MAX", "REDUCE_SUM"),
            ("Cloud SQL CPU", pulumi.Output.concat(sql, f' AND metric.type="{SQL_CPU}"'), "ALIGN_MEAN", "REDUCE_MAX"),
            (
                "Cloud SQL connections",
                pulumi.Output.concat(sql, f' AND metric.type="{SQL_BACKENDS}"'),
                "ALIGN_MAX",
                "REDUCE_SUM",
            ),
            (
                "Memorystore memory",
                pulumi.Output.concat(redis, f' AND metric.type="{REDIS_MEMORY}"'),
                "ALIGN_MEAN",
                "REDUCE_MAX",
            ),
            (
                "Dead-lettered jobs",
                self.dead_letters.name.apply(lambda metric: f'metric.type="logging.googleapis.com/user/{metric}"'),
                "ALIGN_DELTA",
                "REDUCE_SUM",
            ),
        ]
        tiles = [
            {
                "xPos": (i % 2) * 6,
                "yPos": (i // 2) * 4,
                "width": 6,
                "height": 4,
                "widget": {
                    "title": title,
                    "xyChart": {
                        "dataSets": [
                            {
                                "plotType": "LINE",
                                "timeSeriesQuery": {
                                    "timeSeriesFilter": {
                                        "filter": filter_,
                                        "aggregation": {
                                            "alignmentPeriod": "60s",
                                            "perSeriesAligner": aligner,
                                            "crossSeriesReducer": reducer,
                                        },
                                    }
                                },
                            }
                        ]
                    },
                },
            }
            for i, (title, filter_, aligner, reducer) in enumerate(charts)
        ]
        # https://cloud.google.com/monitoring/api/ref_v3/rest/v1/projects.dashboards#MosaicLayout
        return {"displayName": f"Alle {a.prefix}", "mosaicLayout": {"columns": 12, "tiles": tiles}}
