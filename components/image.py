"""The release's image: pinned by digest from config, or built from app/ and pushed to the shared registry.

The Artifact Registry repository is not declared here, in any stack: `ops/bootstrap.sh` creates it in a project
of its own and grants each environment's deployer and Cloud Run service agent their access on it. Destroying or
replacing a stack therefore cannot delete the images production runs, and staging's deployer, which can only
write to the repository, cannot delete them or change who may read them either.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components import release as releases


@dataclass
class ImageArgs:
    project: str
    release: str
    pinned: str | None
    registry_project: str
    registry_location: str
    repository: str
    context: str = "app"


class Image(pulumi.ComponentResource):
    def __init__(self, name: str, args: ImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:image:Image", name, None, opts)
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
                opts=pulumi.ResourceOptions(parent=self),
            )
            # The digest, not the tag: every workload of this release runs exactly these bytes.
            self.ref = built.repo_digest
        self.register_outputs({"ref": self.ref})
