"""Progressive delivery of the web service: each release's revision has its own name and traffic tag.

A release id may be a commit SHA (up to 40 hex), a version (`v1.2.3`) or a timestamp (`2024-01-15T10:30:00Z`);
Cloud Run wants DNS labels, so both names are derived from it, lowercase and length-bounded:
- a revision name must start with the service name and a dash, and be at most 63 characters (RFC 1035)
  (https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services#RevisionTemplate);
- a tag is an RFC 1035 label (lowercase letters, digits and dashes, starting with a letter) of at least 3
  characters, and tag plus service name may not exceed 46 characters because `TAG---SERVICE-….a.run.app` must stay
  one DNS label: the API refuses longer ones with "Combined traffic tag and service name cannot exceed 46
  characters" (reported in github.com/PolicyEngine/policyengine-api/issues/3729; the 3-character minimum in
  github.com/PolicyEngine/policyengine-sim-api/issues/656).
When the release id is not already such a label, or is cut short, an 8-hex digest of the full id is appended,
so two release ids never share a name.

A revision is immutable: Cloud Run refuses a revision name it has seen with a different template ("Error 409:
revision named … already exists", github.com/hashicorp/terraform-provider-google/issues/14569). So the name
ends with a short digest of the template: the same release and config keep their name, while a config change
under the same release (a rotated secret, new sizing) gets a new revision instead of a refused deploy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pulumi

REVISION_MAX = 63
TAG_WITH_SERVICE_MAX = 46
TAG_PREFIX = "r-"
TEMPLATE_DIGEST_HEX = 6
#: The tag of the revision that keeps the traffic this release does not take: its URL for a rollback check.
PREVIOUS_TAG = "previous"
REVISION = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def label(release: str, limit: int) -> str:
    """A DNS-label-safe form of the release id, at most `limit` characters, distinct for distinct ids."""
    slug = re.sub(r"[^a-z0-9]+", "-", release.lower()).strip("-")
    if slug == release and len(slug) <= limit:
        return slug
    digest = hashlib.sha256(release.encode()).hexdigest()[:8]
    head = slug[: max(limit - len(digest) - 1, 0)].rstrip("-")
    return f"{head}-{digest}" if head else digest[:limit]


def revision_name(service: str, release: str, template_digest: str) -> str:
    """`<service>-<release>-<template digest>`, at most 63 characters."""
    room = REVISION_MAX - len(service) - 1 - (TEMPLATE_DIGEST_HEX + 1)
    return f"{service}-{label(release, room)}-{template_digest[:TEMPLATE_DIGEST_HEX]}"


def tag(service: str, release: str) -> str:
    return TAG_PREFIX + label(release, TAG_WITH_SERVICE_MAX - len(service) - len(TAG_PREFIX))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    revision: pulumi.Input[str]
    percent: int
    tag: str


def split(current: pulumi.Input[str], current_tag: str, previous: str, percent: int) -> list[Target]:
    """This release's revision at `percent`, the previous revision at the rest; without one, all to this release.

    Both stay tagged, so each has its own URL whatever share of traffic it takes.
    """
    if not previous:
        return [Target(current, 100, current_tag)]
    return [Target(current, percent, current_tag), Target(previous, 100 - percent, PREVIOUS_TAG)]
