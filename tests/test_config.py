"""Stack config: every bad value stops the program with one sentence naming stack, key, value and what is allowed."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections.abc import Mapping
from importlib.metadata import distribution, packages_distributions
from pathlib import Path
from typing import Any

import pulumi
import pytest
from packaging.utils import canonicalize_name

from components import config
from ops.graph import ROOT, ProgramError, read_yaml, run, stack_config
from stacks import deployed_config


def parse(stack: str, **overrides: str) -> config.StackConfig:
    raw = deployed_config(stack, {f"alle:{k}" if ":" not in k else k: v for k, v in overrides.items()})
    return config.parse(stack, raw, pulumi.Output.from_input("key"))


def error_of(stack: str, **overrides: str) -> str:
    with pytest.raises(config.ConfigError) as caught:
        parse(stack, **overrides)
    return str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "sentence"),
    [
        ({"gcp:region": "mars-north1"}, "Stack 'staging': gcp:region is 'mars-north1'; allowed: asia-east1,"),
        ({"webCpu": "3"}, "Stack 'staging': alle:webCpu is '3'; allowed: 1, 2, 4, 6, 8."),
        (
            {"webMemory": "8Gi"},
            "Stack 'staging': alle:webMemory is '8Gi'; with 1 CPU Cloud Run allows 512Mi to 4096Mi.",
        ),
        ({"workerCpu": "4", "workerMemory": "1Gi"}, "alle:workerMemory is '1Gi'; with 4 CPU Cloud Run allows 2048Mi"),
        ({"webMemory": "lots"}, "alle:webMemory is 'lots'; allowed: a size such as 512Mi or 2Gi."),
        ({"dbTier": "db-custom-3-3840"}, "alle:dbTier is 'db-custom-3-3840'; db-custom-CPUS-MIB needs 1 or an even"),
        ({"dbTier": "db-custom-2-20000"}, "alle:dbTier is 'db-custom-2-20000'; db-custom-CPUS-MIB needs"),
        ({"dbTier": "db-n1-standard-1"}, "alle:dbTier is 'db-n1-standard-1'; allowed: db-f1-micro, db-g1-small"),
        ({"redisTier": "PREMIUM"}, "alle:redisTier is 'PREMIUM'; allowed: BASIC, STANDARD_HA."),
        ({"redisMemoryGb": "0"}, "alle:redisMemoryGb is '0'; allowed: a whole number from 1 to 300."),
        ({"webProcesses": "many"}, "alle:webProcesses is 'many'; allowed: a whole number from 1 to 16."),
        (
            {"webProcesses": "4", "webRequestsPerProcess": "300"},
            "alle:webRequestsPerProcess is '300'; alle:webProcesses 4 × it is Cloud Run's concurrency per instance, "
            "at most 1000.",
        ),
        ({"public": "yes"}, "alle:public is 'yes'; allowed: true or false."),
        ({"webMinInstances": "5", "webMaxInstances": "2"}, "alle:webMinInstances is '5'; it must not exceed"),
        (
            {"image": "europe-west1-docker.pkg.dev/p/alle/alle:latest"},
            "alle:image is 'europe-west1-docker.pkg.dev/p/alle/alle:latest'; allowed: empty (build from app/) or",
        ),
        ({"release": "Release 1"}, "alle:release is 'Release 1'; allowed: 1–128 letters, digits, '.', '_', ':'"),
        ({"release": "-v1"}, "alle:release is '-v1'; allowed: 1–128 letters"),
        ({"logLevel": "TRACE"}, "alle:logLevel is 'TRACE'; allowed: DEBUG, ERROR, INFO, WARNING."),
        ({"subnetCidr": "10.8.0.0/28"}, "alle:subnetCidr is '10.8.0.0/28'; allowed: a private 10.x.y.0 range of /26"),
        ({"cleanupSchedule": "nightly"}, "alle:cleanupSchedule is 'nightly'; allowed: a five-field cron expression."),
        ({"registryProject": "Alle_Shared"}, "alle:registryProject is 'Alle_Shared'; allowed: the id of the registry"),
        ({"registryProject": ""}, "alle:registryProject is ''; allowed: the id of the registry's own project"),
        ({"registryProject": "alle-staging"}, "alle:registryProject is 'alle-staging'; allowed: the id of the regis"),
    ],
)
def test_bad_value_gives_one_clear_sentence(overrides: dict[str, str], sentence: str) -> None:
    assert sentence in error_of("staging", **overrides)


def test_production_must_pin_an_image() -> None:
    assert "Stack 'production': alle:image is ''; production never builds" in error_of("production", image="")


@pytest.mark.parametrize(
    ("overrides", "sentence"),
    [
        ({"dbHighAvailability": "false"}, "alle:dbHighAvailability is 'false'; production requires regional"),
        ({"redisTier": "BASIC"}, "alle:redisTier is 'BASIC'; production requires STANDARD_HA."),
        ({"dbTier": "db-f1-micro"}, "alle:dbTier is 'db-f1-micro'; production needs a dedicated-core tier"),
    ],
)
def test_production_refuses_what_production_must_not_run_on(overrides: dict[str, str], sentence: str) -> None:
    assert sentence in error_of("production", **overrides)


def test_missing_key_says_where_and_how_to_set_it() -> None:
    raw = deployed_config("staging")
    del raw["alle:webCpu"]
    with pytest.raises(config.ConfigError) as caught:
        config.parse("staging", raw, pulumi.Output.from_input("key"))
    assert str(caught.value) == (
        "Stack 'staging': alle:webCpu is not set; declare its default in Pulumi.yaml "
        "(`pulumi config set alle:webCpu … --stack staging`), allowed: 1, 2, 4, 6, 8."
    )


def test_missing_project_points_at_the_stack_file_in_one_line() -> None:
    raw = deployed_config("staging")
    del raw["gcp:project"]
    with pytest.raises(config.ConfigError) as caught:
        config.parse("staging", raw, pulumi.Output.from_input("key"))
    assert str(caught.value) == (
        "Stack 'staging': gcp:project is not set; set it in Pulumi.staging.yaml "
        "(`pulumi config set gcp:project … --stack staging`), "
        "allowed: a GCP project id (6–30 lowercase letters, digits and hyphens)."
    )


@pytest.mark.parametrize(
    ("key", "sentence"),
    [
        (
            "alle:webMemroy",
            "Stack 'staging': alle:webMemroy is '8Gi'; no such key, the closest known key is alle:webMemory.",
        ),
        ("alle:dbtier", "alle:dbtier is '8Gi'; no such key, the closest known key is alle:dbTier."),
        ("gcp:projcet", "gcp:projcet is '8Gi'; no such key, the closest known key is gcp:project."),
        ("ale:webMemory", "ale:webMemory is '8Gi'; no such key, the closest known key is alle:webMemory."),
        ("alle:webConcurrency", "no such key, it became alle:webProcesses × alle:webRequestsPerProcess"),
    ],
)
def test_an_unknown_key_is_refused_with_the_closest_known_key(key: str, sentence: str) -> None:
    assert sentence in error_of("staging", **{key: "8Gi"})


def test_provider_settings_are_known_keys() -> None:
    parse("staging", **{"gcp:zone": "europe-west1-b", "gcp:impersonateServiceAccount": "a@b.iam.gserviceaccount.com"})


def test_a_misspelt_key_in_a_stack_file_stops_the_program() -> None:
    result = run("production", deployed_config("production", {"alle:webMemroy": "8Gi"}))
    assert result["error"] == (
        "ConfigError: Stack 'production': alle:webMemroy is '8Gi'; no such key, "
        "the closest known key is alle:webMemory."
    )


def _project_copy(tmp_path: Path, stack_text: str) -> Path:
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.staging.yaml").write_text(stack_text)
    return tmp_path


def test_broken_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    root = _project_copy(tmp_path, "config:\n  gcp:project: alle-staging\n  alle:webMemory: 1Gi: 2\n")
    with pytest.raises(ProgramError) as caught:
        stack_config("staging", root=root)
    # libyaml words the problem "in this context", PyYAML's own parser "here".
    assert re.fullmatch(
        r"Pulumi\.staging\.yaml line 3, column 22: mapping values are not allowed (here|in this context); "
        r"fix the YAML there\.",
        str(caught.value),
    )


def test_a_stack_file_without_a_config_mapping_is_refused(tmp_path: Path) -> None:
    root = _project_copy(tmp_path, "config:\n  - gcp:project\n")
    with pytest.raises(ProgramError, match=r"^Pulumi.staging.yaml: expected a mapping with a `config:` mapping"):
        stack_config("staging", root=root)


@pytest.mark.parametrize(
    "release",
    ["abc123", "3f5e2a9c0d1b4e6f8a7c9b0d2e4f6a8c1b3d5e7f", "v1.2.3", "2024-01-15T10:30:00Z", "v2.0.0-rc.1+b7"],
)
def test_the_release_id_forms_the_team_uses_are_accepted(release: str) -> None:
    assert parse("production", release=release).release == release


# Connection budget --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "connections"),
    [
        ("db-f1-micro", 25),
        ("db-g1-small", 50),
        ("db-custom-1-3840", 100),
        ("db-custom-1-6144", 200),
        ("db-custom-2-7680", 400),
        ("db-custom-4-15360", 500),
        ("db-custom-8-30720", 600),
        ("db-custom-16-61440", 800),
        ("db-custom-32-122880", 1000),
        ("db-perf-optimized-N-2", 500),
        ("db-n1-standard-1", None),
    ],
)
def test_max_connections_follows_cloud_sqls_table_by_memory(tier: str, connections: int | None) -> None:
    assert config.max_connections(tier) == connections


def test_both_stacks_fit_their_tiers_connection_budget() -> None:
    for stack in ("staging", "production"):
        cfg = parse(stack)
        need = (
            cfg.web_max_instances * cfg.web_processes * cfg.db_pool_size * 2
            + (cfg.worker_instances + config.JOB_COUNT) * cfg.db_pool_size
            + config.RESERVED_CONNECTIONS
        )
        limit = config.max_connections(cfg.db_tier)
        assert limit is not None and need <= limit, (stack, need, limit)


def test_a_stack_whose_pools_cannot_fit_the_tier_fails_with_one_sentence() -> None:
    message = error_of("production", webMaxInstances="40")
    assert message == (
        "Stack 'production': the database needs 669 connections, as alle:webMaxInstances 40 × alle:webProcesses 2 × "
        "alle:dbPoolSize 4 × 2 for rollout overlap (640) + alle:workerInstances 2 × 4 (8) + 4 jobs × 4 (16) + "
        "5 reserved, but alle:dbTier db-custom-2-7680 allows max_connections 400; lower those values or choose a "
        "larger alle:dbTier."
    )


def test_the_budget_is_reported_with_the_other_problems() -> None:
    lines = error_of("production", webMaxInstances="40", webCpu="3").splitlines()
    assert lines[0] == "Stack 'production': alle:webCpu is '3'; allowed: 1, 2, 4, 6, 8."
    assert lines[1].startswith("Stack 'production': the database needs 669 connections")


def test_rollout_overlap_is_counted_twice() -> None:
    # staging's db-g1-small allows 50: web 5 × 1 × 3 = 15 connections, 30 while two revisions overlap.
    parse("staging", webMaxInstances="5")  # 30 + 3 worker + 12 jobs + 5 reserved = 50
    assert "the database needs 56 connections" in error_of("staging", webMaxInstances="6")  # 36 + 3 + 12 + 5


def test_concurrency_pool_and_processes_reach_cloud_run_and_the_app_from_one_place() -> None:
    cfg = parse("production", webProcesses="3", webRequestsPerProcess="25", dbPoolSize="2")
    assert cfg.web_container_concurrency == 75
    sizing = {k: v for k, v in cfg.app_env.items() if k != "TRUSTED_PROXY_HOPS"}
    assert sizing == {"DATABASE_POOL_SIZE": "2", "WEB_CONCURRENCY": "3", "MAX_REQUESTS_IN_FLIGHT": "25"}


def test_unknown_stack_name_is_refused() -> None:
    with pytest.raises(config.ConfigError, match=r"Stack 'dev': stack name is 'dev'; allowed: staging or production"):
        config.parse("dev", deployed_config("staging"), pulumi.Output.from_input("key"))


def test_all_problems_are_reported_at_once_one_line_each() -> None:
    message = error_of("staging", webCpu="3", redisTier="X", public="maybe")
    lines = message.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("Stack 'staging': alle:") and line.endswith(".") for line in lines)


def test_enterprise_plus_tier_selects_enterprise_plus_edition() -> None:
    assert parse("staging", dbTier="db-perf-optimized-N-2").db_edition == "ENTERPRISE_PLUS"
    assert parse("staging", dbTier="db-custom-4-16384").db_edition == "ENTERPRISE"


def test_the_program_itself_stops_on_a_bad_value() -> None:
    result = run("staging", deployed_config("staging", {"alle:webCpu": "3"}))
    assert result["error"] == "ConfigError: Stack 'staging': alle:webCpu is '3'; allowed: 1, 2, 4, 6, 8."


# 1. Project files ---------------------------------------------------------------------------------------------


def _yaml(name: str) -> dict[str, Any]:
    return dict(read_yaml(ROOT / name))


def test_pulumi_yaml_declares_every_key_with_type_description_and_default() -> None:
    project = _yaml("Pulumi.yaml")
    assert project["name"] == "alle"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}
    declared = project["config"]
    assert isinstance(declared, dict)
    alle_keys = {k.split(":")[1] for k in config.KEYS if k.startswith("alle:")}
    assert set(declared) == alle_keys | {"mailApiKey"}
    for key, spec in declared.items():
        assert {"type", "description"} <= set(spec), key
        assert ("default" in spec) != (key == "mailApiKey"), key


def test_stack_files_hold_only_gcp_settings_per_stack_keys_and_encrypted_secrets() -> None:
    allowed = {"gcp:project", "gcp:region", *config.PER_STACK_KEYS}
    for stack in ("staging", "production"):
        values = _yaml(f"Pulumi.{stack}.yaml")["config"]
        plain = {key for key, value in values.items() if not (isinstance(value, dict) and "secure" in value)}
        assert plain <= allowed, plain - allowed


def test_secrets_are_declared_secret_and_never_committed_in_plain_text() -> None:
    declared = _yaml("Pulumi.yaml")["config"]
    assert declared["mailApiKey"]["secret"] is True
    assert not {"default", "value"} & set(declared["mailApiKey"])
    for stack in ("staging", "production"):
        value = _yaml(f"Pulumi.{stack}.yaml")["config"].get("alle:mailApiKey")
        assert value is None or set(value) == {"secure"}, f"{stack} holds alle:mailApiKey in plain text"


def test_requirements_pin_the_pulumi_packages() -> None:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    for package in ("pulumi", "pulumi-gcp", "pulumi-docker", "pulumi-random", "PyYAML", "pytest"):
        assert any(line.lower().startswith(f"{package.lower()}==") for line in lines), package


def _imported_modules(*trees: str) -> dict[str, bool]:
    """Every module the code imports, at the top of a file or inside a function: whether it must be a module (not
    only a name in one, as in `from pulumi import Output`, or a namespace, as in `from google.cloud import run_v2`)."""
    names: dict[str, bool] = {}
    for tree in trees:
        for path in sorted((ROOT / tree).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {alias.name: True for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.setdefault(node.module, False)
                    names |= {f"{node.module}.{alias.name}": False for alias in node.names if alias.name != "*"}
    return names


def _distribution_holding(origin: Path, module: str, providers: Mapping[str, list[str]]) -> str | None:
    """The installed distribution whose files include `origin`, among those that provide the top-level package."""
    for name in providers.get(module.partition(".")[0], []):
        dist = distribution(name)
        root = Path(str(dist.locate_file(""))).resolve()
        if origin.is_relative_to(root) and origin.relative_to(root).as_posix() in map(str, dist.files or []):
            return canonicalize_name(dist.metadata["Name"])
    return None


def test_the_program_lock_holds_every_package_ops_and_components_import() -> None:
    """bin/alle-ops and Pulumi's CLI install requirements.txt alone; `job run` once imported google-cloud-run,
    which only the dev lock held, and failed with ModuleNotFoundError everywhere but after bin/test. Each module is
    traced to the distribution whose files hold it: `google.*` is shared by a dozen."""
    locked = {
        canonicalize_name(line.partition("==")[0])
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }
    providers = packages_distributions()
    unlocked = {}
    for module, required in sorted(_imported_modules("ops", "components").items()):
        if module.partition(".")[0] in {"ops", "components", "__main__", *sys.stdlib_module_names}:
            continue
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:  # a name in a module that is not a package
            spec = None
        if spec is None or spec.origin is None:
            assert not required or spec is not None, f"{module} is not installed"
            continue  # a name in a module, or a namespace package: its own modules are checked
        owner = _distribution_holding(Path(spec.origin).resolve(), module, providers)
        if owner not in locked:
            unlocked[module] = owner
    assert unlocked == {}
