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
    depends_on: list[pulumi.Resource]


class Network(pulumi.ComponentResource):
    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        self.network = gcp.compute.Network(
            f"{name}-vpc",
            gcp.compute.NetworkArgs(project=args.project, name=name, auto_create_subnetworks=False),
            opts=child,
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
            opts=child,
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
                # ABANDON would leave the VPC peering in place, "which will block deletion of the network";
                # REMOVE_PEERING deletes the connection, or removes the peering if the API refuses, "so that the
                # network can be deleted" (pulumi-gcp 10.2, servicenetworking.Connection.deletion_policy).
                deletion_policy="REMOVE_PEERING",
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, self.agent_role]),
        )
        self.network_id = self.network.id
        self.subnet_id = self.subnet.id
        self.services_range_name = self.services_range.name
        self.register_outputs({"network": self.network.id, "subnet": self.subnet.id})
