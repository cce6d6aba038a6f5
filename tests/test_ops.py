"""Operator commands: promotion by digest, on-demand jobs, the offline plan. The cloud call itself is not run."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from http_stub import QuietHandler, serving

from ops import cli, jobs, plan
from ops.graph import ROOT, Graph
from ops.smoke import SmokeError, smoke
from stacks import PROMOTED

STAGING_OUTPUTS: dict[str, Any] = {
    "image": PROMOTED,
    "release": "3f5e2a9",
    "region": "europe-west1",
    "project": "alle-staging",
    "jobs": {"migrate": "alle-staging-migrate", "cleanup-old-tasks": "alle-staging-cleanup-old-tasks"},
}


class FakeStacks:
    """Stands in for the Pulumi CLI: stack outputs in, config writes recorded."""

    def __init__(self, outputs: dict[str, dict[str, Any]]) -> None:
        self.stack_outputs = outputs
        self.config: dict[tuple[str, str], str] = {}
        self.ups: list[tuple[str, list[str], list[str]]] = []

    def outputs(self, stack: str) -> dict[str, Any]:
        return self.stack_outputs[stack]

    def set_config(self, stack: str, key: str, value: str) -> None:
        self.config[(stack, key)] = value

    def up(self, stack: str, targets: list[str], replace: Sequence[str] = ()) -> None:
        self.ups.append((stack, targets, list(replace)))


def test_promote_pins_stagings_digest_and_release_into_production() -> None:
    stacks = FakeStacks({"staging": STAGING_OUTPUTS})
    assert cli.main(["promote"], stacks) == 0
    assert stacks.config == {("production", "alle:image"): PROMOTED, ("production", "alle:release"): "3f5e2a9"}


@pytest.mark.parametrize("image", ["europe-west1-docker.pkg.dev/alle-staging/alle/alle:3f5e2a9", None, ""])
def test_promote_refuses_an_image_not_pinned_by_digest(image: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    stacks = FakeStacks({"staging": {**STAGING_OUTPUTS, "image": image}})
    assert cli.main(["promote"], stacks) == 1
    assert stacks.config == {}
    assert "not a reference pinned by @sha256 digest" in capsys.readouterr().err


def test_rollback_pins_an_earlier_digest() -> None:
    stacks = FakeStacks({})
    earlier = PROMOTED.replace("ab" * 32, "cd" * 32)
    assert cli.main(["pin", "production", earlier, "--release", "2b4c6d8"], stacks) == 0
    assert stacks.config[("production", "alle:image")] == earlier
    assert stacks.config[("production", "alle:release")] == "2b4c6d8"


def test_status_shows_what_each_stack_runs(capsys: pytest.CaptureFixture[str]) -> None:
    stacks = FakeStacks({"staging": STAGING_OUTPUTS, "production": {**STAGING_OUTPUTS, "release": "2b4c6d8"}})
    assert cli.main(["status"], stacks) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"staging: release 3f5e2a9  image {PROMOTED}", f"production: release 2b4c6d8  image {PROMOTED}"]


def test_job_names_and_region_come_from_the_stack_outputs() -> None:
    ref = jobs.resolve(STAGING_OUTPUTS, "migrate")
    assert ref.resource == "projects/alle-staging/locations/europe-west1/jobs/alle-staging-migrate"
    with pytest.raises(jobs.JobLookupError, match="no job 'nightly'; this stack has: cleanup-old-tasks, migrate"):
        jobs.resolve(STAGING_OUTPUTS, "nightly")
    with pytest.raises(jobs.JobLookupError, match="exports no 'jobs'"):
        jobs.resolve({"project": "p", "region": "r"}, "migrate")


def test_job_list_prints_every_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["job", "list", "--stack", "staging"], FakeStacks({"staging": STAGING_OUTPUTS})) == 0
    assert "migrate              projects/alle-staging/locations/europe-west1/jobs/alle-staging-migrate" in (
        capsys.readouterr().out
    )


@dataclass
class Execution:
    name: str
    task_count: int
    succeeded_count: int
    failed_count: int
    cancelled_count: int


EXECUTION = (
    "projects/alle-staging/locations/europe-west1/jobs/alle-staging-migrate/executions/alle-staging-migrate-x7k2p"
)


def test_job_run_waits_and_exits_nonzero_when_the_execution_failed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[jobs.JobRef] = []

    def fake_run(ref: jobs.JobRef, args: list[str] | None = None, timeout: float = 0) -> Execution:
        started.append(ref)
        return Execution(EXECUTION, task_count=1, succeeded_count=0, failed_count=1, cancelled_count=0)

    monkeypatch.setattr(jobs, "run_and_wait", fake_run)
    assert cli.main(["job", "run", "migrate", "--stack", "staging"], FakeStacks({"staging": STAGING_OUTPUTS})) == 1
    assert started == [jobs.JobRef("alle-staging", "europe-west1", "alle-staging-migrate")]
    out = capsys.readouterr().out
    assert "alle-staging-migrate-x7k2p FAILED: 0/1 tasks succeeded, 1 failed, 0 cancelled" in out
    assert (
        "https://console.cloud.google.com/run/jobs/executions/details/europe-west1/alle-staging-migrate-x7k2p"
        "/logs?project=alle-staging&job=alle-staging-migrate"
    ) in out


def test_run_request_names_the_job_and_overrides_args_only_when_given() -> None:
    ref = jobs.JobRef("alle-production", "europe-west1", "alle-production-generate-report")
    plain = jobs.run_request(ref)
    assert plain.name == "projects/alle-production/locations/europe-west1/jobs/alle-production-generate-report"
    assert not plain.overrides.container_overrides
    override = jobs.run_request(ref, ["dead-jobs", "list"])
    assert list(override.overrides.container_overrides[0].args) == ["dead-jobs", "list"]


def test_job_run_passes_replacement_args_after_the_separator(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str] | None] = []

    def fake_run(ref: jobs.JobRef, args: list[str] | None = None, timeout: float = 0) -> Execution:
        seen.append(args)
        return Execution(EXECUTION, task_count=1, succeeded_count=1, failed_count=0, cancelled_count=0)

    monkeypatch.setattr(jobs, "run_and_wait", fake_run)
    stacks = FakeStacks({"staging": STAGING_OUTPUTS})
    assert cli.main(["job", "run", "migrate", "--stack", "staging", "--", "dead-jobs", "list"], stacks) == 0
    assert seen == [["dead-jobs", "list"]]


def test_successful_execution_is_reported_as_such() -> None:
    ok, line = jobs.outcome(Execution(EXECUTION, task_count=1, succeeded_count=1, failed_count=0, cancelled_count=0))
    assert ok
    assert line == "alle-staging-migrate-x7k2p succeeded: 1/1 tasks succeeded, 0 failed, 0 cancelled"


def test_migrate_retry_is_one_pulumi_up_that_replaces_the_tokens_random_id(
    staging: Graph, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks = FakeStacks({})
    assert cli.main(["migrate", "retry", "--stack", "staging"], stacks) == 0
    [random_id] = [r for r in staging.resources if r.type == "random:index/randomId:RandomId"]
    assert stacks.ups == [("staging", [], [random_id.urn])], "the whole stack, with the token's RandomId replaced"
    assert random_id.urn in capsys.readouterr().out


def test_plan_shows_the_settings_a_reviewer_cares_about(production: Graph) -> None:
    text = plan.render(production)
    assert text.startswith("Stack production: 118 resources (103 cloud)")
    for expected in (
        "tier: db-custom-2-7680 (ENTERPRISE)",
        "availability: REGIONAL",
        "tier: STANDARD_HA",
        "instances: 1–20",
        f"image: {PROMOTED}",
        "secret DATABASE_URL: alle-production-database-url:1",
        "env APP_ENV: production",
        "secretData: (secret)",
        "invoker check: off (public)",
        "concurrency: 64",
        "env WEB_CONCURRENCY: 2",
        "runs when image or release changes: yes, waits up to 40m",
        "secretData: (secret)",
        "deletion protection: provider true, api true, pulumi true",
    ):
        assert expected in text, expected
    assert "mock-auth-string" not in text and "r" * 40 not in text


def test_plan_markdown_is_a_nested_list_for_a_pr_comment(staging: Graph) -> None:
    text = plan.render(staging, markdown=True)
    assert text.startswith("### Stack staging: 119 resources (104 cloud)")
    assert "- **alle-staging-pg** `gcp:sql/databaseInstance:DatabaseInstance`" in text


def test_diff_lists_exactly_what_differs_between_the_stacks(staging: Graph, production: Graph) -> None:
    changes = {(c.resource, c.setting): (c.left, c.right) for c in plan.diff(staging, production)}
    sql = "alle-<stack>-pg [gcp:sql/databaseInstance:DatabaseInstance]"
    assert changes[(sql, "availability")] == ("ZONAL", "REGIONAL")
    assert changes[("alle-<stack>-build [docker:index/image:Image]", "(resource)")] == ("present", "absent")
    service = "alle-<stack>-service [gcp:cloudrunv2/service:Service]"
    assert changes[(service, "env APP_ENV")] == ("staging", "production")
    assert (service, "env LOG_LEVEL") not in changes
    assert (service, "secret DATABASE_URL") not in changes  # same secret, named per stack, same version
    same = plan.diff(staging, staging)
    assert same == []


def test_plan_for_an_unpinned_promoted_stack_marks_the_digest_as_placeholder() -> None:
    config = plan.review_config("production")
    assert config["alle:image"] == "europe-west1-docker.pkg.dev/alle-registry/alle/alle@sha256:" + "0" * 64
    assert plan.review_config("staging")["alle:image"] == ""  # staging builds


def test_plan_cli_runs_offline_for_one_stack(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "--stack", "staging", "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("### Stack staging: 119 resources")


def test_plan_reports_a_bad_config_as_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "--stack", "dev"]) == 1
    assert capsys.readouterr().err == (
        "alle-ops: no stack file Pulumi.dev.yaml; the stacks here are production, staging\n"
    )


@pytest.fixture(scope="module")
def local_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `alle web` on embedded services, as the smoke test would find a deployed one."""
    sys.path.insert(0, str(ROOT / "app" / "dev"))
    import backing

    services = backing.start(tmp_path_factory.mktemp("smoke"), persistent=False, durable=False)
    env = services.release_env("test", "3f5e2a9")
    subprocess.run([backing.ALLE, "migrate"], env=env, check=True, capture_output=True)
    port = backing.free_port()
    web = subprocess.Popen([backing.ALLE, "web"], env={**env, "PORT": str(port)}, stdout=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        web.terminate()
        web.wait(15)
        services.stop()


def test_smoke_checks_readiness_release_and_a_task_round_trip(local_release: str) -> None:
    stacks = FakeStacks({"staging": {**STAGING_OUTPUTS, "web_url": local_release}})
    assert cli.main(["smoke", "--stack", "staging"], stacks) == 0


def test_smoke_fails_when_the_stack_runs_another_release(
    local_release: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks = FakeStacks({"staging": {**STAGING_OUTPUTS, "web_url": local_release, "release": "9e8d7c6"}})
    assert cli.main(["smoke", "--stack", "staging"], stacks) == 1
    assert "runs release '3f5e2a9', expected '9e8d7c6'" in capsys.readouterr().err


def test_smoke_fails_when_nothing_answers() -> None:
    with pytest.raises(SmokeError, match="/readyz did not answer"):
        smoke("http://127.0.0.1:9", wait_seconds=0)


@contextlib.contextmanager
def _site(pages: dict[str, bytes]) -> Iterator[str]:
    """A web server on a free local port answering 200 with the page for each path; yields its base URL."""

    class Pages(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server calls it by this name
            body = pages[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Pages) as base:
        yield base


def test_smoke_fails_when_the_web_client_is_served_without_a_csp() -> None:
    pages = {"/readyz": b'{"status": "ready", "release": "r1"}', "/": b'<script src="/assets/app.js"></script>'}
    with _site(pages) as base, pytest.raises(SmokeError, match="GET / has no strict Content-Security-Policy"):
        smoke(base, wait_seconds=30)


def test_smoke_fails_a_release_that_is_only_degraded() -> None:
    """Degraded (PostgreSQL answers, Redis does not) serves traffic, but a new release with a wrong REDIS_URL or CA
    would stay degraded for good: it has not passed."""
    degraded = b'{"status": "degraded", "checks": {"database": true, "redis": false}, "release": "r1"}'
    with _site({"/readyz": degraded}) as base, pytest.raises(SmokeError, match=r"answered 200: .*'redis': False"):
        smoke(base, wait_seconds=0)
