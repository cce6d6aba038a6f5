"""The uploads bucket: private, uniform access, versioned, old versions expire; access granted on the bucket only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp


@dataclass
class StorageArgs:
    project: str
    region: str
    noncurrent_days: int
    production: bool
    members: Sequence[pulumi.Input[str]]
    labels: dict[str, str]
    depends_on: list[pulumi.Resource]


class Storage(pulumi.ComponentResource):
    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:storage:Storage", name, None, opts)
        self.bucket = gcp.storage.Bucket(
            f"{name}-uploads",
            gcp.storage.BucketArgs(
                project=args.project,
                name=f"{args.project}-alle-uploads",
                location=args.region,
                uniform_bucket_level_access=True,
                public_access_prevention="enforced",
                versioning=gcp.storage.BucketVersioningArgs(enabled=True),
                # Production's bucket is never emptied as a side effect of a destroy (it is protected too); staging's
                # is: without force_destroy, deleting "buckets with objects/caches will fail" and `pulumi destroy`
                # stops (pulumi-gcp 10.2, storage.Bucket.force_destroy).
                force_destroy=not args.production,
                lifecycle_rules=[
                    gcp.storage.BucketLifecycleRuleArgs(
                        action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                        condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                            days_since_noncurrent_time=args.noncurrent_days, with_state="ARCHIVED"
                        ),
                    )
                ],
                labels=args.labels,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on, protect=args.production),
        )
        self.grants = [
            gcp.storage.BucketIAMMember(
                f"{name}-uploads-user-{index}",
                gcp.storage.BucketIAMMemberArgs(
                    bucket=self.bucket.name, role="roles/storage.objectUser", member=member
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for index, member in enumerate(args.members)
        ]
        self.bucket_name = self.bucket.name
        self.register_outputs({"bucket": self.bucket.name})
