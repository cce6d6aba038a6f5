"""Promotion by digest: production runs exactly the image (and release id) staging ran."""

from __future__ import annotations

from dataclasses import dataclass

from components.config import IMAGE_DIGEST, RELEASE
from components.release import RELEASE_ID_ALLOWED
from ops.errors import OpsError
from ops.pulumi_cli import Stacks


class PromotionError(OpsError):
    pass


@dataclass(frozen=True)
class Release:
    image: str
    release: str


def running(outputs: dict[str, object], stack: str) -> Release:
    """The release a stack runs, read from its outputs; refuses anything not pinned by digest."""
    image, release = outputs.get("image"), outputs.get("release")
    if not isinstance(image, str) or not IMAGE_DIGEST.match(image):
        raise PromotionError(
            f"stack {stack} exports image {image!r}, not a reference pinned by @sha256 digest; "
            f"run `pulumi up --stack {stack}` first"
        )
    if not isinstance(release, str) or not RELEASE.match(release):
        raise PromotionError(f"stack {stack} exports release {release!r}; expected a release id")
    return Release(image=image, release=release)


def pin(stacks: Stacks, target: str, release: Release) -> None:
    """Write the digest and release id into the target stack's config (Pulumi.<target>.yaml)."""
    if not IMAGE_DIGEST.match(release.image):
        raise PromotionError(f"{release.image!r} is not pinned by digest (REGISTRY/PATH@sha256:<64 hex>)")
    if not RELEASE.match(release.release):
        raise PromotionError(f"{release.release!r} is not a release id; {RELEASE_ID_ALLOWED}")
    stacks.set_config(target, "alle:image", release.image)
    stacks.set_config(target, "alle:release", release.release)


def promote(stacks: Stacks, source: str, target: str) -> Release:
    release = running(stacks.outputs(source), source)
    pin(stacks, target, release)
    return release
