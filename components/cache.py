"""Memorystore for Redis 7 on private services access, with AUTH and in-transit encryption."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp


@dataclass
class CacheArgs:
    project: str
    region: str
    prefix: str
    tier: str
    memory_gb: int
    redis_version: str
    production: bool
    network_id: pulumi.Input[str]
    reserved_range: pulumi.Input[str]
    labels: dict[str, str]
    depends_on: list[pulumi.Resource]


class Cache(pulumi.ComponentResource):
    def __init__(self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:cache:Cache", name, None, opts)
        self.instance = gcp.redis.Instance(
            f"{name}-redis",
            gcp.redis.InstanceArgs(
                project=args.project,
                region=args.region,
                name=f"{args.prefix}-redis",
                tier=args.tier,
                memory_size_gb=args.memory_gb,
                redis_version=args.redis_version,
                connect_mode="PRIVATE_SERVICE_ACCESS",
                authorized_network=args.network_id,
                reserved_ip_range=args.reserved_range,
                auth_enabled=True,
                transit_encryption_mode="SERVER_AUTHENTICATION",
                deletion_protection=args.production,
                labels=args.labels,
                # Saturday, a day before Cloud SQL's window (components/database.py): the two are never under
                # maintenance at once. The nightly jobs run after this hour (Pulumi.yaml cleanupSchedule).
                maintenance_policy=gcp.redis.InstanceMaintenancePolicyArgs(
                    weekly_maintenance_windows=[
                        gcp.redis.InstanceMaintenancePolicyWeeklyMaintenanceWindowArgs(
                            day="SATURDAY",
                            start_time=gcp.redis.InstanceMaintenancePolicyWeeklyMaintenanceWindowStartTimeArgs(
                                hours=3, minutes=0
                            ),
                        )
                    ]
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on, protect=args.production),
        )
        #: rediss:// with the AUTH string: TLS on Memorystore's port, verified against REDIS_CA_CERT.
        self.url: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.format(
                "rediss://:{0}@{1}:{2}/0", self.instance.auth_string, self.instance.host, self.instance.port
            )
        )
        # Every CA the instance lists: during a CA rotation both the old and the new one are valid.
        self.ca_cert: pulumi.Output[str] = self.instance.server_ca_certs.apply(
            lambda certs: "".join(c.cert or "" for c in certs)
        )
        self.register_outputs({"host": self.instance.host})
