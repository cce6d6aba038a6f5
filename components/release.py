"""A release id as people write it, and the forms GCP needs of it: a label value, an image tag, an execution token.

The Alle team writes release ids three ways: a git SHA (`abc123` or all 40 characters), a semantic version
(`v1.2.3`) and a UTC timestamp (`2024-01-15T10:30:00Z`). All are accepted as they are; the app gets the
original as RELEASE, and each GCP field gets a value derived to fit that field's own rules.
"""

from __future__ import annotations

import re

#: What a release id may be: wide enough for the three forms above (and `dev`), narrow enough to be safe in a
#: shell, a URL and a log line.
RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
RELEASE_ID_ALLOWED = (
    "allowed: 1–128 letters, digits, '.', '_', ':', '+' or '-', starting with a letter or digit, "
    "e.g. a git SHA (abc123), a version (v1.2.3) or a UTC timestamp (2024-01-15T10:30:00Z)"
)

#: Label values: lowercase letters, digits, '_' and '-', at most 63 characters.
#: https://cloud.google.com/resource-manager/docs/labels-overview#requirements
LABEL_VALUE_MAX = 63
#: Docker/OCI tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#: https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
TAG_MAX = 128
#: "The sum of job name and token length must be fewer than 63 characters" (pulumi-gcp 10.2,
#: cloudrunv2.Job.run_execution_token); the execution is named `<job>-<token>`, an RFC 1035 label
#: (lowercase letters, digits, '-'), https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs
EXECUTION_NAME_LIMIT = 63
#: Random hex characters that make every token unique, whatever release it belongs to: a RandomId of this many
#: hex digits, new whenever the image or the release changes (components/jobs.py).
NONCE_HEX = 8


def is_release_id(value: str) -> bool:
    return bool(RELEASE_ID.match(value))


def _slug(release: str, allowed: str) -> str:
    """Lowercase, every character outside `allowed` (a regex class body) as '-', runs of '-' folded."""
    slug = re.sub(f"[^{allowed}]", "-", release.lower())
    return re.sub("-{2,}", "-", slug).strip("-")


def label_value(release: str) -> str:
    """`v1.2.3` → `v1-2-3`, `2024-01-15T10:30:00Z` → `2024-01-15t10-30-00z`; a 40-character SHA fits as is."""
    return _slug(release, "a-z0-9_-")[:LABEL_VALUE_MAX] or "release"


def image_tag(release: str) -> str:
    """The tag the built image is pushed under: `:` and `+` are not allowed in a tag."""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", release)[:TAG_MAX]
    return tag if re.match(r"^[A-Za-z0-9_]", tag) else f"r{tag}"[:TAG_MAX]


def token_budget(job_name: str) -> int:
    """The longest token the job accepts: `len(job_name) + len(token) < 63`."""
    return EXECUTION_NAME_LIMIT - 1 - len(job_name)


def execution_token(job_name: str, release: str, nonce: str) -> str:
    """`<release slug>-<nonce>`: as much of the release as fits next to the job name, then the random nonce.

    GCP keeps a job's executions and refuses a token that named one of them ("already exists",
    hashicorp/terraform-provider-google#24451), and the provider's Read takes the token from what the API
    reports (terraform-provider-google-beta v7.45.0, services/cloudrunv2/resource_cloud_run_v2_job.go:
    flattenCloudRunV2JobRunExecutionToken), which after an out-of-band run is not ours, so `pulumi refresh`
    makes the next `up` resend a used one. The nonce is a
    RandomId kept for as long as the image and the release stay the same: a scale-only `pulumi up` sends the
    same token and starts nothing, a new release or a rollback gets fresh bytes and so a new execution, and a
    retry (`alle-ops migrate retry`) replaces the RandomId on purpose.
    """
    room = token_budget(job_name) - len(nonce) - 1
    if room < 0:
        raise ValueError(f"job name {job_name!r} leaves no room for an execution token")
    # An execution id is an RFC 1035 label: no '_', '.', ':' or uppercase; the release part may be empty.
    head = _slug(release, "a-z0-9")[:room].strip("-")
    return f"{head}-{nonce}" if head else nonce
