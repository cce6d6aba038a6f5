"""The release's image: pinned by digest from config, or built from app/ and pushed to Artifact Registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
import pulumi_gcp as gcp

#: Cloud Run's service agent pulls images; in another project's registry it needs explicit read access.
SERVICE_AGENT = "serviceAccount:service-{number}@serverless-robot-prod.iam.gserviceaccount.com"


@dataclass
class ImageArgs:
    project: str
    release: str
    pinned: str | None
    registry_project: str
    registry_location: str
    repository: str
    readers: Sequence[pulumi.Input[str]]
    labels: dict[str, str]
    depends_on: list[pulumi.Resource]
    context: str = "app"


class Image(pulumi.ComponentResource):
    def __init__(self, name: str, args: ImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:image:Image", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        self.repository: gcp.artifactregistry.Repository | None = None
        self.grants: list[pulumi.Resource] = []
        if args.registry_project == args.project:
            self.repository = gcp.artifactregistry.Repository(
                f"{name}-repo",
                gcp.artifactregistry.RepositoryArgs(
                    project=args.project,
                    location=args.registry_location,
                    repository_id=args.repository,
                    format="DOCKER",
                    description="Alle release images; production pulls the digests staging ran.",
                    labels=args.labels,
                    cleanup_policy_dry_run=False,
                    cleanup_policies=[
                        gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                            id="keep-recent-releases",
                            action="KEEP",
                            most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                                keep_count=30
                            ),
                        ),
                        gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                            id="delete-old-untagged",
                            action="DELETE",
                            condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                                tag_state="UNTAGGED", older_than="1209600s"
                            ),
                        ),
                    ],
                ),
                opts=child,
            )
        else:
            number = gcp.organizations.get_project_output(project_id=args.project).number
            members = [*args.readers, pulumi.Output.format(SERVICE_AGENT, number=number)]
            self.grants = [
                gcp.artifactregistry.RepositoryIamMember(
                    f"{name}-pull-{index}",
                    gcp.artifactregistry.RepositoryIamMemberArgs(
                        project=args.registry_project,
                        location=args.registry_location,
                        repository=args.repository,
                        role="roles/artifactregistry.reader",
                        member=member,
                    ),
                    opts=child,
                )
                for index, member in enumerate(members)
            ]
        if args.pinned:
            self.ref: pulumi.Output[str] = pulumi.Output.from_input(args.pinned)
        else:
            host = f"{args.registry_location}-docker.pkg.dev"
            built = docker.Image(
                f"{name}-build",
                docker.ImageArgs(
                    image_name=f"{host}/{args.registry_project}/{args.repository}/alle:{args.release}",
                    build=docker.DockerBuildArgs(
                        context=args.context,
                        dockerfile=f"{args.context}/Dockerfile",
                        platform="linux/amd64",
                    ),
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[r for r in [self.repository] if r]),
            )
            # The digest, not the tag: every workload of this release runs exactly these bytes.
            self.ref = built.repo_digest
        self.register_outputs({"ref": self.ref})
