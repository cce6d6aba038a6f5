"""The long-running processes: `alle web` as a Cloud Run service and `alle worker` as a Cloud Run worker pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from components import delivery
from components.config import Sizing
from components.workload import GCP_OWNED, Workload

run = gcp.cloudrunv2
CONTAINER_PORT = 8080


@dataclass
class WebArgs:
    project: str
    region: str
    prefix: str
    production: bool
    public: bool
    workload: Workload
    service_account: pulumi.Input[str]
    sizing: Sizing
    min_instances: int
    max_instances: int
    #: Cloud Run's requests per instance: web processes × requests in flight per process (components/config.py).
    concurrency: int
    depends_on: list[pulumi.Resource]
    #: This release, the revision that keeps the traffic it does not take, and its share (components/delivery.py).
    release: str = "dev"
    previous_revision: str = ""
    traffic_percent: int = 100
    #: Served through the load balancer (components/edge.py): no run.app URL, no direct ingress.
    behind_load_balancer: bool = False


class Web(pulumi.ComponentResource):
    def __init__(self, name: str, args: WebArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:services:Web", name, None, opts)
        w = args.workload
        # An instance has started once PostgreSQL answers it (/readyz: 200, also while Redis is away, which the app
        # serves through). A revision with a wrong DATABASE_URL or password then never starts, takes no traffic,
        # and fails its `pulumi up`, rather than answering 503 to all. Liveness needs no I/O (/healthz).
        probe = run.ServiceTemplateContainerStartupProbeHttpGetArgs(path="/readyz", port=CONTAINER_PORT)
        service_name = f"{args.prefix}-web"
        template = self._template(args, probe)
        # The revision is named after the release and a digest of everything in its template.
        self.revision: pulumi.Output[str] = pulumi.Output.json_dumps(_plain(template), sort_keys=True).apply(
            lambda text: delivery.revision_name(service_name, args.release, delivery.digest(text))
        )
        template.revision = self.revision
        self.tag = delivery.tag(service_name, args.release)
        targets = delivery.split(self.revision, self.tag, args.previous_revision, args.traffic_percent)
        self.service = run.Service(
            f"{name}-service",
            run.ServiceArgs(
                project=args.project,
                location=args.region,
                name=service_name,
                # Behind the load balancer, only it (and the VPC) may reach the service, and the run.app URL is
                # disabled, so nothing bypasses Cloud Armor (https://cloud.google.com/run/docs/securing/ingress,
                # https://cloud.google.com/run/docs/configuring/services/default-url).
                ingress="INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
                if args.behind_load_balancer
                else "INGRESS_TRAFFIC_ALL",
                default_uri_disabled=args.behind_load_balancer,
                # Public without an allUsers binding: domain-restricted sharing (iam.allowedPolicyMemberDomains)
                # refuses allUsers in many organizations. Disabling the invoker check is the documented way
                # (https://cloud.google.com/run/docs/authenticating/public#invoker_check; pulumi-gcp 10.2,
                # cloudrunv2.Service.invoker_iam_disabled; fabric modules/cloud-run-v2 README).
                invoker_iam_disabled=args.public,
                deletion_protection=args.production,
                labels=w.labels,
                traffics=[
                    run.ServiceTrafficArgs(
                        type="TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                        revision=t.revision,
                        percent=t.percent,
                        tag=t.tag,
                    )
                    for t in targets
                ],
                template=template,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, *w.ready], ignore_changes=GCP_OWNED),
        )
        self.url = self.service.uri
        #: Revision name → percent of traffic.
        self.traffic: pulumi.Output[dict[str, int]] = pulumi.Output.all(*(t.revision for t in targets)).apply(
            lambda names: {str(n): t.percent for n, t in zip(names, targets, strict=True)}
        )
        #: This release's own URL (its traffic tag's), before and whatever traffic it takes.
        self.tag_url: pulumi.Output[str] = self.service.traffic_statuses.apply(
            lambda statuses: next((s.uri or "" for s in statuses or [] if s.tag == self.tag), "")
        )
        self.register_outputs({"url": self.url, "tag_url": self.tag_url, "revision": self.revision})

    def _template(
        self, args: WebArgs, probe: gcp.cloudrunv2.ServiceTemplateContainerStartupProbeHttpGetArgs
    ) -> gcp.cloudrunv2.ServiceTemplateArgs:
        w = args.workload
        return run.ServiceTemplateArgs(
            labels=w.release_labels,
            service_account=args.service_account,
            execution_environment="EXECUTION_ENVIRONMENT_GEN2",
            max_instance_request_concurrency=args.concurrency,
            timeout="60s",
            scaling=run.ServiceTemplateScalingArgs(
                min_instance_count=args.min_instances, max_instance_count=args.max_instances
            ),
            vpc_access=w.vpc(run.ServiceTemplateVpcAccessArgs, run.ServiceTemplateVpcAccessNetworkInterfaceArgs),
            containers=[
                run.ServiceTemplateContainerArgs(
                    image=w.image,
                    args=["web"],
                    ports=run.ServiceTemplateContainerPortsArgs(container_port=CONTAINER_PORT),
                    envs=w.envs(
                        run.ServiceTemplateContainerEnvArgs,
                        run.ServiceTemplateContainerEnvValueSourceArgs,
                        run.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs,
                    ),
                    resources=run.ServiceTemplateContainerResourcesArgs(
                        limits={"cpu": args.sizing.cpu, "memory": args.sizing.memory},
                        startup_cpu_boost=True,
                        cpu_idle=True,
                    ),
                    # Every second, the least Cloud Run allows (periodSeconds >= 1 and >= timeoutSeconds): a web
                    # process answers /readyz about 1 s after exec (README, Performance), and with a probe
                    # every 2 s a new instance waited for the next one. Still 30 s before a start counts as failed.
                    # https://cloud.google.com/run/docs/reference/rest/v2/Container#probe
                    startup_probe=run.ServiceTemplateContainerStartupProbeArgs(
                        http_get=probe, period_seconds=1, failure_threshold=30, timeout_seconds=1
                    ),
                    liveness_probe=run.ServiceTemplateContainerLivenessProbeArgs(
                        http_get=run.ServiceTemplateContainerLivenessProbeHttpGetArgs(
                            path="/healthz", port=CONTAINER_PORT
                        ),
                        period_seconds=15,
                        failure_threshold=3,
                        timeout_seconds=2,
                    ),
                )
            ],
        )


def _plain(value: Any) -> Any:
    """An Args object as nested dicts and lists (Outputs left in place), so it can be serialised and digested."""
    if isinstance(value, (str, int, float, bool, type(None), pulumi.Output)):
        return value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return {k: _plain(v) for k, v in vars(value).items()}


@dataclass
class WorkerArgs:
    project: str
    region: str
    prefix: str
    production: bool
    workload: Workload
    service_account: pulumi.Input[str]
    sizing: Sizing
    instances: int
    depends_on: list[pulumi.Resource]


class Worker(pulumi.ComponentResource):
    def __init__(self, name: str, args: WorkerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:services:Worker", name, None, opts)
        w = args.workload
        self.pool = run.WorkerPool(
            f"{name}-pool",
            run.WorkerPoolArgs(
                project=args.project,
                location=args.region,
                name=f"{args.prefix}-worker",
                # Worker pools were a pre-GA Cloud Run surface, refused at the GA launch stage; BETA is accepted
                # either way. Once GA, the API reads back GA: a change on every preview, which ignoring the field
                # avoids (as with Cloud Run services when their BETA features went GA,
                # chainguard-dev/terraform-infra-common#608).
                launch_stage="BETA",
                deletion_protection=args.production,
                labels=w.labels,
                scaling=run.WorkerPoolScalingArgs(scaling_mode="MANUAL", manual_instance_count=args.instances),
                template=run.WorkerPoolTemplateArgs(
                    labels=w.release_labels,
                    service_account=args.service_account,
                    vpc_access=w.vpc(
                        run.WorkerPoolTemplateVpcAccessArgs, run.WorkerPoolTemplateVpcAccessNetworkInterfaceArgs
                    ),
                    containers=[
                        run.WorkerPoolTemplateContainerArgs(
                            image=w.image,
                            args=["worker"],
                            envs=w.envs(
                                run.WorkerPoolTemplateContainerEnvArgs,
                                run.WorkerPoolTemplateContainerEnvValueSourceArgs,
                                run.WorkerPoolTemplateContainerEnvValueSourceSecretKeyRefArgs,
                            ),
                            resources=run.WorkerPoolTemplateContainerResourcesArgs(
                                limits={"cpu": args.sizing.cpu, "memory": args.sizing.memory}
                            ),
                        )
                    ],
                ),
            ),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*args.depends_on, *w.ready], ignore_changes=[*GCP_OWNED, "launchStage"]
            ),
        )
        self.name = self.pool.name
        self.register_outputs({"name": self.pool.name})
