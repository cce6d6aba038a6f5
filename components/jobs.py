"""Cloud Run jobs: `alle migrate` as the release phase, and the admin one-offs, all from the release's image."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from components.config import Sizing
from components.workload import Workload

run = gcp.cloudrunv2


@dataclass
class JobsArgs:
    project: str
    region: str
    prefix: str
    release: str
    production: bool
    workload: Workload
    service_account: pulumi.Input[str]
    sizing: Sizing
    cleanup_older_than_days: int
    depends_on: list[pulumi.Resource]


class Jobs(pulumi.ComponentResource):
    def __init__(self, name: str, args: JobsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:jobs:Jobs", name, None, opts)
        commands = {
            "migrate": ["migrate"],
            "cleanup-old-tasks": ["cleanup-old-tasks", "--older-than-days", str(args.cleanup_older_than_days)],
            "generate-report": ["generate-report"],
        }
        self.jobs = {command: self._job(name, args, command, argv) for command, argv in commands.items()}
        self.migrate = self.jobs["migrate"]
        self.names: dict[str, pulumi.Output[str]] = {command: job.name for command, job in self.jobs.items()}
        self.register_outputs({"names": self.names})

    def _job(self, name: str, args: JobsArgs, command: str, argv: list[str]) -> gcp.cloudrunv2.Job:
        w = args.workload
        return run.Job(
            f"{name}-{command}",
            run.JobArgs(
                project=args.project,
                location=args.region,
                name=f"{args.prefix}-{command}",
                labels=w.labels,
                deletion_protection=args.production,
                # Release phase: a new release id starts an execution of `alle migrate` and `pulumi up` waits for
                # it to succeed; web and worker depend on this job, so a failed migration stops the rollout.
                run_execution_token=args.release if command == "migrate" else None,
                template=run.JobTemplateArgs(
                    labels=w.labels,
                    task_count=1,
                    parallelism=1,
                    template=run.JobTemplateTemplateArgs(
                        service_account=args.service_account,
                        # A failed migration is not retried blindly; an operator reads the log and reruns it.
                        max_retries=0 if command == "migrate" else 1,
                        timeout="1800s",
                        execution_environment="EXECUTION_ENVIRONMENT_GEN2",
                        vpc_access=w.vpc(
                            run.JobTemplateTemplateVpcAccessArgs, run.JobTemplateTemplateVpcAccessNetworkInterfaceArgs
                        ),
                        containers=[
                            run.JobTemplateTemplateContainerArgs(
                                image=w.image,
                                args=argv,
                                envs=w.envs(
                                    run.JobTemplateTemplateContainerEnvArgs,
                                    run.JobTemplateTemplateContainerEnvValueSourceArgs,
                                    run.JobTemplateTemplateContainerEnvValueSourceSecretKeyRefArgs,
                                ),
                                resources=run.JobTemplateTemplateContainerResourcesArgs(
                                    limits={"cpu": args.sizing.cpu, "memory": args.sizing.memory}
                                ),
                            )
                        ],
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, *w.ready]),
        )
