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
        self.private_services = gcp.servicenetworking.Connection(
            f"{name}-psa",
            gcp.servicenetworking.ConnectionArgs(
                network=self.network.id,
                service="servicenetworking.googleapis.com",
                reserved_peering_ranges=[self.services_range.name],
                # Deleting the peering fails while Cloud SQL or Memorystore still hold addresses in it, which
                # would wedge `pulumi destroy`; abandoning it leaves nothing billable behind.
                deletion_policy="ABANDON",
            ),
            opts=child,
        )
        self.network_id = self.network.id
        self.subnet_id = self.subnet.id
        self.services_range_name = self.services_range.name
        self.register_outputs({"network": self.network.id, "subnet": self.subnet.id})
