"""Stack config: every bad value stops the program with one sentence naming stack, key, value and what is allowed."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
import yaml

from components import config
from ops.graph import ROOT, run
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
        ({"webConcurrency": "many"}, "alle:webConcurrency is 'many'; allowed: a whole number from 1 to 1000."),
        ({"public": "yes"}, "alle:public is 'yes'; allowed: true or false."),
        ({"webMinInstances": "5", "webMaxInstances": "2"}, "alle:webMinInstances is '5'; it must not exceed"),
        (
            {"image": "europe-west1-docker.pkg.dev/p/alle/alle:latest"},
            "alle:image is 'europe-west1-docker.pkg.dev/p/alle/alle:latest'; allowed: empty (build from app/) or",
        ),
        ({"release": "Release 1"}, "alle:release is 'Release 1'; allowed: 1–63 lowercase letters"),
        ({"logLevel": "TRACE"}, "alle:logLevel is 'TRACE'; allowed: DEBUG, ERROR, INFO, WARNING."),
        ({"subnetCidr": "10.8.0.0/28"}, "alle:subnetCidr is '10.8.0.0/28'; allowed: a private 10.x.y.0 range of /26"),
        ({"cleanupSchedule": "nightly"}, "alle:cleanupSchedule is 'nightly'; allowed: a five-field cron expression."),
        ({"registryProject": "alle-shared"}, "alle:image is ''; a stack that pulls from alle-shared's registry"),
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


def test_missing_key_says_how_to_set_it() -> None:
    raw = deployed_config("staging")
    del raw["alle:webCpu"]
    with pytest.raises(
        config.ConfigError, match=r"alle:webCpu is None; it is required .*pulumi config set alle:webCpu"
    ):
        config.parse("staging", raw, pulumi.Output.from_input("key"))


def test_unknown_stack_name_is_refused() -> None:
    with pytest.raises(config.ConfigError, match=r"Stack 'dev': stack name is 'dev'; allowed: staging or production"):
        config.parse("dev", deployed_config("staging"), pulumi.Output.from_input("key"))


def test_all_problems_are_reported_at_once() -> None:
    message = error_of("staging", webCpu="3", redisTier="X", public="maybe")
    assert message.count("Stack 'staging':") == 3


def test_enterprise_plus_tier_selects_enterprise_plus_edition() -> None:
    assert parse("staging", dbTier="db-perf-optimized-N-2").db_edition == "ENTERPRISE_PLUS"
    assert parse("staging", dbTier="db-custom-4-16384").db_edition == "ENTERPRISE"


def test_the_program_itself_stops_on_a_bad_value() -> None:
    result = run("staging", deployed_config("staging", {"alle:webCpu": "3"}))
    assert result["error"] == "ConfigError: Stack 'staging': alle:webCpu is '3'; allowed: 1, 2, 4, 6, 8."


# 1. Project files ---------------------------------------------------------------------------------------------


def _yaml(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / name).read_text()))


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
        assert any(line.startswith(f"{package}==") for line in lines), package
