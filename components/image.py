"""The release's image: pinned by digest from config, or built from app/ and pushed to Artifact Registry."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
import pulumi_gcp as gcp

from components import release as releases


@dataclass
class ImageArgs:
    project: str
    release: str
    pinned: str | None
    registry_project: str
    registry_location: str
    repository: str
    labels: dict[str, str]
    depends_on: list[pulumi.Resource]
    #: The Run API: Cloud Run's service agent exists only once it is enabled.
    run_api: list[pulumi.Resource]
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
                # Production pulls its release images from here: a `pulumi destroy --stack staging` (or a
                # replacement) must leave the repository and its images in place. retain_on_delete drops it from
                # staging's state without deleting it (https://www.pulumi.com/docs/iac/concepts/options/retainondelete/);
                # re-creating staging then adopts it with `pulumi import` (README).
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on, retain_on_delete=True),
            )
        else:
            # Cloud Run's service agent pulls the image; another project's registry must grant it read access.
            # It exists only once run.googleapis.com is enabled (fabric: modules/project/service-agents.yaml,
            # serverless-robot-prod; https://cloud.google.com/run/docs/deploying#other-projects), so its identity
            # is created from the Run API before the grant.
            self.run_agent = gcp.projects.ServiceIdentity(
                f"{name}-run-agent",
                gcp.projects.ServiceIdentityArgs(project=args.project, service="run.googleapis.com"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.run_api),
            )
            # Only the agent: Cloud Run imports the image when a revision is deployed and never pulls it as the
            # workload's identity ("If your repositories are in a different project, you must grant Artifact
            # Registry Reader permissions to the Cloud Run Service Agent",
            # https://cloud.google.com/artifact-registry/docs/integrate-cloud-run; run/docs/deploying).
            self.grants = [
                gcp.artifactregistry.RepositoryIamMember(
                    f"{name}-pull-run-agent",
                    gcp.artifactregistry.RepositoryIamMemberArgs(
                        project=args.registry_project,
                        location=args.registry_location,
                        repository=args.repository,
                        role="roles/artifactregistry.reader",
                        member=self.run_agent.member,
                    ),
                    opts=child,
                )
            ]
        if args.pinned:
            self.ref: pulumi.Output[str] = pulumi.Output.from_input(args.pinned)
        else:
            host = f"{args.registry_location}-docker.pkg.dev"
            tag = releases.image_tag(args.release)
            built = docker.Image(
                f"{name}-build",
                docker.ImageArgs(
                    image_name=f"{host}/{args.registry_project}/{args.repository}/alle:{tag}",
                    build=docker.DockerBuildArgs(
                        context=args.context,
                        dockerfile=f"{args.context}/Dockerfile",
                        platform="linux/amd64",
                        # The Dockerfile's final stage; app/dev/image.py builds the same one for the tests.
                        target="release",
                    ),
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[r for r in [self.repository] if r]),
            )
            # The digest, not the tag: every workload of this release runs exactly these bytes.
            self.ref = built.repo_digest
        self.register_outputs({"ref": self.ref})
