"""Cloud Run jobs: `alle migrate` as the release phase, and the admin jobs, all from the release's image."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from components import release as releases
from components.config import Sizing
from components.workload import GCP_OWNED, Workload

run = gcp.cloudrunv2
#: A task may run this long; `pulumi up` must wait at least as long for the migrate execution.
TASK_TIMEOUT_SECONDS = 1800
#: Create and update wait 20 minutes by default (the provider's Timeouts section for this resource,
#: https://registry.terraform.io/providers/hashicorp/google/latest/docs/resources/cloud_run_v2_job#timeouts);
#: the release job's task may run 30, plus the time to start the execution and pull the image.
RELEASE_JOB_TIMEOUT = "40m"


def migrate_token_name(prefix: str) -> str:
    """The RandomId behind the migrate job's execution token; `alle-ops migrate retry` replaces it."""
    return f"{prefix}-migrate-token"


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
            "prune-sessions": ["prune-sessions"],
        }
        # The random part of the migrate job's execution token. Its keepers are what makes a release: while the
        # image and the release stay the same, it keeps its bytes, so a scale-only or no-op `pulumi up` sends the
        # same token and starts no execution; a new release or a rollback replaces it with fresh bytes, so the
        # token was never used before (pulumi-random RandomId: "keepers … will trigger a new id to be generated").
        self.token = random.RandomId(
            migrate_token_name(name),
            random.RandomIdArgs(
                byte_length=releases.NONCE_HEX // 2,
                keepers={"image": args.workload.image, "release": args.release},
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.jobs = {command: self._job(name, args, command, argv) for command, argv in commands.items()}
        self.migrate = self.jobs["migrate"]
        self.names: dict[str, pulumi.Output[str]] = {command: job.name for command, job in self.jobs.items()}
        self.register_outputs({"names": self.names})

    def _job(self, name: str, args: JobsArgs, command: str, argv: list[str]) -> gcp.cloudrunv2.Job:
        w = args.workload
        job_name = f"{args.prefix}-{command}"
        release_phase = command == "migrate"
        return run.Job(
            f"{name}-{command}",
            run.JobArgs(
                project=args.project,
                location=args.region,
                name=job_name,
                labels=w.release_labels,
                deletion_protection=args.production,
                # Release phase: a new image or release sets a token never used before, which starts an execution
                # of `alle migrate`, and `pulumi up` waits for it to succeed ("The Job will become ready when the
                # execution is successfully completed", pulumi-gcp 10.2 cloudrunv2.Job.run_execution_token). Web
                # and worker depend on this job, so a failed migration stops the rollout; `alle-ops migrate retry`
                # replaces the token's RandomId to run it again (README, "Operating releases").
                run_execution_token=self.token.hex.apply(
                    lambda nonce: releases.execution_token(job_name, args.release, nonce)
                )
                if release_phase
                else None,
                template=run.JobTemplateArgs(
                    labels=w.release_labels,
                    task_count=1,
                    parallelism=1,
                    template=run.JobTemplateTemplateArgs(
                        service_account=args.service_account,
                        # A failed migration is not retried blindly; an operator reads the log and reruns it.
                        max_retries=0 if command == "migrate" else 1,
                        timeout=f"{TASK_TIMEOUT_SECONDS}s",
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
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.depends_on, *w.ready],
                custom_timeouts=pulumi.CustomTimeouts(create=RELEASE_JOB_TIMEOUT, update=RELEASE_JOB_TIMEOUT)
                if release_phase
                else None,
                ignore_changes=GCP_OWNED,
            ),
        )
