"""Release ids in the forms the team writes them, and the values GCP accepts that are derived from them."""

from __future__ import annotations

import re

import pytest

from components import release

RELEASES = [
    "dev",
    "abc123",
    "3f5e2a9c0d1b4e6f8a7c9b0d2e4f6a8c1b3d5e7f",
    "v1.2.3",
    "v2.0.0-rc.1+build.7",
    "2024-01-15T10:30:00Z",
    "release_2024_01",
    "A" * 128,
]
#: The longest job name either stack has (the migrate job is the one with a token).
JOBS = ["alle-staging-migrate", "alle-production-migrate", "alle-production-cleanup-old-tasks"]
#: An execution id is an RFC 1035 label.
EXECUTION_ID = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{1,63}$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@pytest.mark.parametrize("value", RELEASES)
def test_every_release_form_is_a_valid_release_id(value: str) -> None:
    assert release.is_release_id(value)


@pytest.mark.parametrize("value", ["", "-v1", "v 1", "release/1", "a" * 129, "ünïcode"])
def test_what_is_not_a_release_id(value: str) -> None:
    assert not release.is_release_id(value)


@pytest.mark.parametrize("value", RELEASES)
@pytest.mark.parametrize("job", JOBS)
def test_execution_tokens_fit_gcps_limits_for_every_release_and_job(value: str, job: str) -> None:
    token = release.execution_token(job, value, "f" * release.NONCE_HEX)
    assert len(job) + len(token) < 63
    assert EXECUTION_ID.match(f"{job}-{token}"), token


def test_a_token_keeps_as_much_of_the_release_as_fits() -> None:
    sha = "3f5e2a9c0d1b4e6f8a7c9b0d2e4f6a8c1b3d5e7f"
    assert release.execution_token("alle-production-migrate", sha, nonce="0123abcd") == f"{sha[:30]}-0123abcd"
    assert release.execution_token("alle-staging-migrate", "v1.2.3", nonce="0123abcd") == "v1-2-3-0123abcd"


@pytest.mark.parametrize(
    ("value", "label", "tag"),
    [
        ("v1.2.3", "v1-2-3", "v1.2.3"),
        ("2024-01-15T10:30:00Z", "2024-01-15t10-30-00z", "2024-01-15T10-30-00Z"),
        ("v2.0.0-rc.1+build.7", "v2-0-0-rc-1-build-7", "v2.0.0-rc.1-build.7"),
        ("3f5e2a9c0d1b4e6f8a7c9b0d2e4f6a8c1b3d5e7f", "3f5e2a9c0d1b4e6f8a7c9b0d2e4f6a8c1b3d5e7f", None),
    ],
)
def test_label_values_and_image_tags_are_derived_to_fit_their_own_rules(
    value: str, label: str, tag: str | None
) -> None:
    assert release.label_value(value) == label
    assert release.image_tag(value) == (tag or value)


@pytest.mark.parametrize("value", RELEASES)
def test_derived_label_values_and_tags_are_always_valid(value: str) -> None:
    assert LABEL_VALUE.match(release.label_value(value))
    assert TAG.match(release.image_tag(value))
