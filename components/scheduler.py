"""Cloud Scheduler runs the nightly admin jobs (`alle cleanup-old-tasks`, `alle prune-sessions`) through the Cloud
Run Admin API's jobs.run."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp


@dataclass(frozen=True)
class Schedule:
    #: The Cloud Run job to run (its name in the API).
    job_name: pulumi.Input[str]
    #: Five-field cron expression.
    cron: str


@dataclass
class SchedulerArgs:
    project: str
    region: str
    prefix: str
    #: command → when to run its job.
    schedules: dict[str, Schedule]
    time_zone: str
    invoker_email: pulumi.Input[str]
    invoker_member: pulumi.Input[str]
    depends_on: list[pulumi.Resource]


#: Resource names these schedules had before there were several, kept so that state carries over unchanged.
FORMER_NAMES = {"cleanup-old-tasks": ("cleanup", "invoker")}


class Scheduler(pulumi.ComponentResource):
    def __init__(self, name: str, args: SchedulerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:scheduler:Scheduler", name, None, opts)
        self.jobs: dict[str, gcp.cloudscheduler.Job] = {}
        for command, schedule in args.schedules.items():
            job_alias, grant_alias = FORMER_NAMES.get(command, (None, None))
            # The invoker may run these jobs and nothing else.
            grant = gcp.cloudrunv2.JobIamMember(
                f"{name}-{command}-invoker",
                gcp.cloudrunv2.JobIamMemberArgs(
                    project=args.project,
                    location=args.region,
                    name=schedule.job_name,
                    role="roles/run.invoker",
                    member=args.invoker_member,
                ),
                opts=pulumi.ResourceOptions(
                    parent=self, aliases=[pulumi.Alias(name=f"{name}-{grant_alias}")] if grant_alias else None
                ),
            )
            self.jobs[command] = gcp.cloudscheduler.Job(
                f"{name}-{command}",
                gcp.cloudscheduler.JobArgs(
                    project=args.project,
                    region=args.region,
                    name=f"{args.prefix}-{command}",
                    description=f"Nightly `alle {command}` (Cloud Run job execution).",
                    schedule=schedule.cron,
                    time_zone=args.time_zone,
                    attempt_deadline="180s",
                    retry_config=gcp.cloudscheduler.JobRetryConfigArgs(retry_count=2, min_backoff_duration="60s"),
                    http_target=gcp.cloudscheduler.JobHttpTargetArgs(
                        http_method="POST",
                        uri=pulumi.Output.format(
                            "https://run.googleapis.com/v2/projects/{0}/locations/{1}/jobs/{2}:run",
                            args.project,
                            args.region,
                            schedule.job_name,
                        ),
                        oauth_token=gcp.cloudscheduler.JobHttpTargetOauthTokenArgs(
                            service_account_email=args.invoker_email,
                            scope="https://www.googleapis.com/auth/cloud-platform",
                        ),
                    ),
                ),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[*args.depends_on, grant],
                    aliases=[pulumi.Alias(name=f"{name}-{job_alias}")] if job_alias else None,
                ),
            )
        self.register_outputs({"jobs": {command: job.name for command, job in self.jobs.items()}})
