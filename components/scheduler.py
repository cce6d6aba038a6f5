"""Cloud Scheduler runs `alle cleanup-old-tasks` nightly through the Cloud Run Admin API's jobs.run."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp


@dataclass
class SchedulerArgs:
    project: str
    region: str
    prefix: str
    schedule: str
    time_zone: str
    job_name: pulumi.Input[str]
    invoker_email: pulumi.Input[str]
    invoker_member: pulumi.Input[str]
    depends_on: list[pulumi.Resource]


class Scheduler(pulumi.ComponentResource):
    def __init__(self, name: str, args: SchedulerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:scheduler:Scheduler", name, None, opts)
        # The invoker may run this one job and nothing else.
        self.grant = gcp.cloudrunv2.JobIamMember(
            f"{name}-invoker",
            gcp.cloudrunv2.JobIamMemberArgs(
                project=args.project,
                location=args.region,
                name=args.job_name,
                role="roles/run.invoker",
                member=args.invoker_member,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.job = gcp.cloudscheduler.Job(
            f"{name}-cleanup",
            gcp.cloudscheduler.JobArgs(
                project=args.project,
                region=args.region,
                name=f"{args.prefix}-cleanup-old-tasks",
                description="Nightly `alle cleanup-old-tasks` (Cloud Run job execution).",
                schedule=args.schedule,
                time_zone=args.time_zone,
                attempt_deadline="180s",
                retry_config=gcp.cloudscheduler.JobRetryConfigArgs(retry_count=2, min_backoff_duration="60s"),
                http_target=gcp.cloudscheduler.JobHttpTargetArgs(
                    http_method="POST",
                    uri=pulumi.Output.format(
                        "https://run.googleapis.com/v2/projects/{0}/locations/{1}/jobs/{2}:run",
                        args.project,
                        args.region,
                        args.job_name,
                    ),
                    oauth_token=gcp.cloudscheduler.JobHttpTargetOauthTokenArgs(
                        service_account_email=args.invoker_email,
                        scope="https://www.googleapis.com/auth/cloud-platform",
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, self.grant]),
        )
        self.register_outputs({"job": self.job.name})
