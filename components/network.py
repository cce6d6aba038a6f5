"""The VPC: a subnet for Cloud Run Direct VPC egress and private services access for Cloud SQL and Memorystore."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp


@dataclass
class NetworkArgs:
    project: str
    region: str
    subnet_cidr: str
    services_range_prefix: int
    #: Production's network, services range and connection are protected, and its peering is never removed.
    production: bool
    depends_on: list[pulumi.Resource]


class Network(pulumi.ComponentResource):
    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        # Cloud SQL and Memorystore reach the app through these three; in production nothing deletes them.
        kept = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on, protect=args.production)
        self.network = gcp.compute.Network(
            f"{name}-vpc",
            gcp.compute.NetworkArgs(project=args.project, name=name, auto_create_subnetworks=False),
            opts=kept,
        )
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-run",
            gcp.compute.SubnetworkArgs(
                project=args.project,
                name=f"{name}-run",
                region=args.region,
                network=self.network.id,
                ip_cidr_range=args.subnet_cidr,
                private_ip_google_access=True,
            ),
            opts=child,
        )
        self.services_range = gcp.compute.GlobalAddress(
            f"{name}-services",
            gcp.compute.GlobalAddressArgs(
                project=args.project,
                name=f"{name}-services",
                purpose="VPC_PEERING",
                address_type="INTERNAL",
                prefix_length=args.services_range_prefix,
                network=self.network.id,
            ),
            opts=kept,
        )
        # The service networking agent must exist and hold its role before the first connection: right after the
        # API is enabled it may not, and the connection then fails intermittently. Fabric's project module creates
        # it and grants roles/servicenetworking.serviceAgent for this reason (modules/project/service-agents.yaml,
        # GoogleCloudPlatform/cloud-foundation-fabric); the role is documented at
        # https://cloud.google.com/service-infrastructure/docs/service-networking/getting-started
        self.agent = gcp.projects.ServiceIdentity(
            f"{name}-servicenetworking-agent",
            gcp.projects.ServiceIdentityArgs(project=args.project, service="servicenetworking.googleapis.com"),
            opts=child,
        )
        self.agent_role = gcp.projects.IAMMember(
            f"{name}-servicenetworking-agent-role",
            gcp.projects.IAMMemberArgs(
                project=args.project, role="roles/servicenetworking.serviceAgent", member=self.agent.member
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.private_services = gcp.servicenetworking.Connection(
            f"{name}-psa",
            gcp.servicenetworking.ConnectionArgs(
                network=self.network.id,
                service="servicenetworking.googleapis.com",
                reserved_peering_ranges=[self.services_range.name],
                # Outside production, REMOVE_PEERING deletes the connection, or removes the peering if the API
                # refuses, "so that the network can be deleted"; ABANDON would leave the peering, "which will block
                # deletion of the network". It is an escape hatch for ephemeral networks: removing the peering
                # while instances still use it breaks them (pulumi-gcp 10.2, servicenetworking.Connection
                # .deletion_policy), so production keeps ABANDON and, above all, protect.
                deletion_policy="ABANDON" if args.production else "REMOVE_PEERING",
            ),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*args.depends_on, self.agent_role], protect=args.production
            ),
        )
        self.network_id = self.network.id
        self.subnet_id = self.subnet.id
        self.services_range_name = self.services_range.name
        self.register_outputs({"network": self.network.id, "subnet": self.subnet.id})
