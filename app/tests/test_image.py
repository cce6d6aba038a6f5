"""The release image's definition: hadolint-clean, one pinned base, non-root, installs the hashed lock.

The built image, run the way Cloud Run runs it, is tested in test_image_run.py.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import backing
import image

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"
APP = DOCKERFILE.parent


def test_dockerfile_is_clean_under_hadolint() -> None:
    result = subprocess.run(
        ["hadolint", "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_is_one_arg_pinned_by_digest_and_the_release_stage_runs_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE}", "${BASE}"]
    release = text.split(f"\nFROM ${{BASE}} AS {image.TARGET}\n")[1]
    assert re.search(r"^USER 10001$", release, re.M)
    assert 'ENTRYPOINT ["alle"]' in release
    assert "pip install" not in release and "apt-get" not in release


def test_image_installs_the_hashed_lock_that_satisfies_the_declared_dependencies() -> None:
    assert "pip install --require-hashes -r requirements.txt" in DOCKERFILE.read_text()
    lock = (APP / "requirements.txt").read_text()
    pins = dict(re.findall(r"^([\w.\-]+)==([\w.]+) \\$", lock, re.M))
    assert len(pins) == lock.count("==") and lock.count("--hash=sha256:") >= len(pins)
    declared = tomllib.loads((APP / "pyproject.toml").read_text())["project"]["dependencies"]
    for line in declared:
        requirement = Requirement(line)
        pinned = {name.lower().replace("_", "-"): version for name, version in pins.items()}
        version = pinned[requirement.name.lower()]
        assert requirement.specifier.contains(version), f"{requirement} does not allow the locked {version}"


def test_run_local_image_refuses_a_data_directory_another_run_holds_before_building_or_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bin/run-local` and `bin/run-local --image` keep their data in the same directory: run side by side, they
    shared one PostgreSQL and Redis, and the first to stop stopped them under the other."""
    monkeypatch.setattr(image, "DATA_DIR", tmp_path)
    monkeypatch.setattr(image, "missing_tools", list)
    monkeypatch.setattr(image, "build", lambda: pytest.fail("built although the data directory was taken"))
    held = backing.claim(tmp_path)
    assert held is not None
    with held:
        assert image.main() == 1
    assert f"{tmp_path} is in use by another bin/run-local" in capsys.readouterr().err


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the build context's shape, with this checkout's .dockerignore, for image's build-inputs digest."""
    app = tmp_path / "app"
    for name in (
        "alle/__init__.py",
        "alle/__pycache__/cli.cpython-311.pyc",
        "alle/tests/data.txt",
        "tests/test_x.py",
        "requirements.txt",
    ):
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(name)
    (app / "alle" / "data").symlink_to("tests")
    (app / ".dockerignore").write_text((APP / ".dockerignore").read_text())
    (app / "Dockerfile").write_text("FROM ${BASE}\n")
    monkeypatch.setattr(image, "APP", app)
    monkeypatch.setattr(image, "ROOT", tmp_path)
    return app


def inputs(base: str = "base-1", options: tuple[str, ...] = ("--target=release",)) -> str:
    return image._build_inputs(base, options)


@pytest.mark.parametrize(
    "changed", ["alle/__init__.py", "alle/new.py", "alle/tests/data.txt", "requirements.txt", "Dockerfile"]
)
def test_a_change_to_what_podman_sends_or_builds_from_changes_the_build_inputs(context: Path, changed: str) -> None:
    """The inputs' digest is what lets image.build skip podman build; a change it missed would test a stale image.
    `alle/tests/` is sent: .dockerignore's `tests` leaves out the top-level directory only."""
    before = inputs()
    (context / changed).write_text("changed")
    assert inputs() != before


def test_a_changed_executable_bit_or_symlink_target_changes_the_build_inputs(context: Path) -> None:
    before = inputs()
    (context / "requirements.txt").chmod(0o755)
    assert inputs() != before
    before = inputs()
    (context / "alle" / "data").unlink()
    (context / "alle" / "data").symlink_to("other")
    assert inputs() != before


def test_a_new_base_image_or_build_option_changes_the_build_inputs(context: Path) -> None:
    assert inputs() != inputs(base="base-2")
    assert inputs() != inputs(options=("--target=release", "--build-arg=X=1"))


@pytest.mark.parametrize("changed", ["tests/test_x.py", "alle/__pycache__/cli.cpython-311.pyc", ".mypy_cache/x"])
def test_what_dockerignore_leaves_out_does_not_change_the_build_inputs(context: Path, changed: str) -> None:
    before = inputs()
    (context / changed).parent.mkdir(parents=True, exist_ok=True)
    (context / changed).write_text("changed")
    assert inputs() == before


@pytest.mark.parametrize(
    ("ignore", "name"),
    [
        ("!tests/test_x.py\n", ".dockerignore"),
        ("[t]ests\n", ".dockerignore"),
        ("te\\sts\n", ".dockerignore"),
        ("tests\n", ".containerignore"),
    ],
    ids=["a-negation", "a-glob-set", "an-escape", "a-containerignore"],
)
def test_an_ignore_file_read_otherwise_than_podman_might_makes_every_file_count(
    context: Path, ignore: str, name: str
) -> None:
    """Go's globs read `[!x]` and `\\` otherwise than Python's; a negation sends back what an earlier line left
    out; podman reads .containerignore instead of .dockerignore. The digest then counts everything, so never less."""
    with (context / name).open("a") as file:
        file.write(ignore)
    before = inputs()
    (context / "tests" / "test_x.py").write_text("changed")
    assert inputs() != before


class Podman:
    """podman's answers to image.build, from an image store kept here: a build's steps are podman's own business."""

    def __init__(self, during_build: Callable[[], object] = lambda: None) -> None:
        self.store = {"base"}
        self.calls: list[tuple[str, ...]] = []
        self.during_build = during_build

    def __call__(self, *args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        found, out = True, ""
        if args[:2] == ("image", "inspect"):
            found, out = args[-1] in self.store, f"sha256:{args[-1]}\n"
        elif args[:2] == ("image", "exists"):
            found = args[-1] in self.store
        elif args[0] == "build":
            self.during_build()
            built = f"sha256:image{self.builds()}"
            self.store.add(built)
            iidfile = next(a.removeprefix("--iidfile=") for a in args if a.startswith("--iidfile="))
            Path(iidfile).write_text(built)
        return subprocess.CompletedProcess(args, 0 if found else 125, stdout=out, stderr="")

    def builds(self) -> int:
        return sum(call[0] == "build" for call in self.calls)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(image, "CACHE", tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache"


def test_a_build_with_nothing_changed_is_skipped_and_retagged_until_its_image_leaves_the_store(
    context: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    podman = Podman()
    monkeypatch.setattr(image, "podman", podman)
    first = image.build(base="base")
    assert (image.build(base="base"), podman.builds()) == (first, 1)
    assert ("tag", first, image.TAG) in podman.calls, "a skipped build left the tag where another build put it"
    podman.store.discard(first)
    assert image.build(base="base") != first
    assert podman.builds() == 2


def test_a_build_whose_inputs_changed_while_it_ran_leaves_no_stamp(
    context: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """podman reads each COPY's files when that step runs, minutes into a cold build: a stamp of the inputs hashed
    before would pair them with an image built from others, and a later build would return that image."""
    edits = iter(range(100))
    podman = Podman(lambda: (context / "alle" / "__init__.py").write_text(f"edited during build {next(edits)}"))
    monkeypatch.setattr(image, "podman", podman)
    image.build(base="base")
    assert not (cache / "built.json").exists()
    image.build(base="base")
    assert podman.builds() == 2, "a build was skipped on a stamp of inputs podman never read"
