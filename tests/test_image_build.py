"""The Pulumi program builds the release image exactly as the tests build and run it (app/dev/image.py)."""

from __future__ import annotations

import re
import sys

from ops.graph import ROOT, Graph

sys.path.insert(0, str(ROOT / "app" / "dev"))

import image


def test_program_and_image_tests_build_the_same_dockerfile_stage_platform_and_args(staging: Graph) -> None:
    build = staging.one("docker:index/image:Image").inputs["build"]
    assert build["context"] == image.CONTEXT
    assert build["dockerfile"] == image.DOCKERFILE
    assert build["platform"] == image.PLATFORM
    assert build["target"] == image.TARGET
    # The only build argument is the base, which the tests replace by the stand-in; the program keeps the default.
    assert not build.get("args")
    dockerfile = (ROOT / image.DOCKERFILE).read_text()
    assert re.findall(r"^ARG (\w+)", dockerfile, re.M) == ["BASE"]
    assert f" AS {image.TARGET}\n" in dockerfile


def test_image_tests_build_the_dockerfiles_last_stage() -> None:
    stages = re.findall(r"^FROM \S+ AS (\w+)$", (ROOT / image.DOCKERFILE).read_text(), re.M)
    assert stages[-1] == image.TARGET
