"""The whole Pulumi program per stack, asserted on the inputs the engine would receive (camelCase)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from typing import Any

import pytest

from ops.graph import ROOT, Graph, Resource
from stacks import MAIL_KEY, PROMOTED, RunOnce, deployed, deployed_config

RUN = "gcp:cloudrunv2"
SERVICE, WORKER_POOL, JOB = f"{RUN}/service:Service", f"{RUN}/workerPool:WorkerPool", f"{RUN}/job:Job"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
REDIS = "gcp:redis/instance:Instance"
BUCKET = "gcp:storage/bucket:Bucket"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
SECRET_IAM = "gcp:secretmanager/secretIamMember:SecretIamMember"
PSA = "gcp:servicenetworking/connection:Connection"
APP_ENV_NAMES = [
    "APP_ENV",
    "DATABASE_POOL_SIZE",
    "DATABASE_URL",
    "GOOGLE_CLOUD_PROJECT",
    "LOG_LEVEL",
    "MAIL_API_KEY",
    "MAIL_FROM",
    "MAX_REQUESTS_IN_FLIGHT",
    "REDIS_CA_CERT",
    "REDIS_URL",
    "RELEASE",
    "SECRET_KEY",
    "STORAGE_BUCKET",
    "TRUSTED_PROXY_HOPS",
    "WEB_CONCURRENCY",
]


def container(resource: Resource) -> dict[str, Any]:
    template = resource.inputs["template"]
    if resource.type == JOB:
        template = template["template"]
    [only] = template["containers"]
    return dict(only)


def env(resource: Resource) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueSource")) for e in container(resource)["envs"]}


def workloads(graph: Graph) -> list[Resource]:
    return [*graph.of_type(SERVICE), *graph.of_type(WORKER_POOL), *graph.of_type(JOB)]


def sa(graph: Graph, role: str) -> str:
    return f"serviceAccount:alle-{graph.stack}-{role}@alle-{graph.stack}.iam.gserviceaccount.com"


# Counts --------------------------------------------------------------------------------------------------------


def test_staging_registers_its_full_resource_set(staging: Graph) -> None:
    # The core (88, with 2 telemetry grants per workload identity), edge (+15: address, certificate, SSL policy,
    # Armor policy, 2 NEGs, 2 backends, 2 URL maps, 2 proxies, 2 forwarding rules, component), monitoring (+13: a
    # channel, uptime check, log metric, 8 alerts, dashboard, component), APIs (+4: monitoring, logging, dns,
    # billingbudgets), the migrate token's RandomId (+1); no registry and no Artifact Registry API in the stack's
    # project (−2: ops/bootstrap.sh owns both).
    assert len(staging.resources) == 88 + 15 + 13 + 4 + 1 - 2
    assert len([r for r in staging.resources if not r.custom]) == 15


def test_production_registers_its_full_resource_set(production: Graph) -> None:
    # Staging's set without the build (−1).
    assert len(production.resources) == 88 + 15 + 13 + 4 + 1 - 2 - 1
    assert len([r for r in production.resources if not r.custom]) == 15


def test_every_custom_resource_is_parented_to_a_component(stack: Graph) -> None:
    components = {r.urn for r in stack.resources if not r.custom}
    assert all(r.parent in components for r in stack.custom())


# 3. Components -------------------------------------------------------------------------------------------------


def test_apis_are_enabled_and_never_disabled_on_destroy(stack: Graph) -> None:
    apis = stack.of_type("gcp:projects/service:Service")
    assert {a.inputs["service"] for a in apis} >= {
        "run.googleapis.com",
        "sqladmin.googleapis.com",
        "redis.googleapis.com",
        "secretmanager.googleapis.com",
        "servicenetworking.googleapis.com",
        "cloudscheduler.googleapis.com",
    }
    assert all(a.inputs["disableOnDestroy"] is False for a in apis)


API_OF = {
    "gcp:compute/": "compute.googleapis.com",
    "gcp:servicenetworking/": "servicenetworking.googleapis.com",
    "gcp:sql/databaseInstance": "sqladmin.googleapis.com",
    "gcp:redis/": "redis.googleapis.com",
    "gcp:secretmanager/secret:": "secretmanager.googleapis.com",
    "gcp:serviceaccount/": "iam.googleapis.com",
    "gcp:projects/iAMMember:": "cloudresourcemanager.googleapis.com",
    "gcp:cloudrunv2/service:": "run.googleapis.com",
    "gcp:cloudrunv2/workerPool:": "run.googleapis.com",
    "gcp:cloudrunv2/job:": "run.googleapis.com",
    "gcp:cloudscheduler/": "cloudscheduler.googleapis.com",
    "gcp:storage/bucket:": "storage.googleapis.com",
    "gcp:monitoring/": "monitoring.googleapis.com",
    "gcp:logging/": "logging.googleapis.com",
}


def test_every_resource_waits_for_the_api_it_uses(stack: Graph) -> None:
    apis = {a.inputs["service"]: a for a in stack.of_type("gcp:projects/service:Service")}
    checked = 0
    for resource in stack.custom():
        for prefix, api in API_OF.items():
            if resource.type.startswith(prefix):
                assert stack.depends_on(resource, apis[api]), f"{resource.name} does not wait for {api}"
                checked += 1
    assert checked >= 40


def test_network_has_run_subnet_and_private_services_access_that_destroy_can_remove(stack: Graph) -> None:
    subnet = stack.one("gcp:compute/subnetwork:Subnetwork")
    assert subnet.inputs["ipCidrRange"] == "10.8.0.0/24"
    [address] = [a for a in stack.of_type("gcp:compute/globalAddress:GlobalAddress") if a.inputs.get("purpose")]
    assert (address.inputs["purpose"], address.inputs["addressType"]) == ("VPC_PEERING", "INTERNAL")
    connection = stack.one(PSA)
    assert connection.inputs["service"] == "servicenetworking.googleapis.com"
    assert connection.inputs["reservedPeeringRanges"] == [address.inputs["name"]]
    for workload in workloads(stack):
        template = workload.inputs["template"]
        vpc = (template["template"] if workload.type == JOB else template)["vpcAccess"]
        assert vpc["networkInterfaces"] == [
            {"network": "alle-" + stack.stack + "-vpc-id", "subnetwork": f"alle-{stack.stack}-run-id"}
        ]
        assert vpc["egress"] == "PRIVATE_RANGES_ONLY"


def test_staging_removes_its_peering_on_destroy_and_nothing_in_its_network_is_protected(staging: Graph) -> None:
    connection = staging.one(PSA)
    assert connection.inputs["deletionPolicy"] == "REMOVE_PEERING"
    for typ in (PSA, "gcp:compute/network:Network", "gcp:compute/globalAddress:GlobalAddress"):
        assert not any(r.protect for r in staging.of_type(typ))


def test_production_never_removes_its_peering_and_protects_network_range_and_connection(production: Graph) -> None:
    """REMOVE_PEERING while instances still use the peering breaks them (pulumi-gcp 10.2
    servicenetworking.Connection.deletion_policy): an escape hatch for ephemeral networks, not production's."""
    connection = production.one(PSA)
    assert connection.inputs["deletionPolicy"] == "ABANDON"
    [address] = [a for a in production.of_type("gcp:compute/globalAddress:GlobalAddress") if a.inputs.get("purpose")]
    for resource in (connection, address, production.one("gcp:compute/network:Network")):
        assert resource.protect is True, resource.name


def test_cloud_sql_is_postgres_16_private_ssl_only_with_backups_pitr_maintenance_insights(stack: Graph) -> None:
    sql = stack.one(SQL).inputs
    assert sql["databaseVersion"] == "POSTGRES_16"
    settings = sql["settings"]
    assert settings["ipConfiguration"]["ipv4Enabled"] is False
    assert settings["ipConfiguration"]["privateNetwork"] == f"alle-{stack.stack}-vpc-id"
    assert settings["ipConfiguration"]["sslMode"] == "ENCRYPTED_ONLY"
    backup = settings["backupConfiguration"]
    assert backup["enabled"] and backup["pointInTimeRecoveryEnabled"]
    assert backup["transactionLogRetentionDays"] == 7
    assert settings["maintenanceWindow"] == {"day": 7, "hour": 3, "updateTrack": "stable"}
    assert settings["insightsConfig"]["queryInsightsEnabled"] is True


def test_production_database_is_regional_and_protected_three_ways(production: Graph) -> None:
    sql = production.one(SQL)
    assert sql.inputs["settings"]["availabilityType"] == "REGIONAL"
    assert sql.inputs["settings"]["tier"] == "db-custom-2-7680"
    assert sql.inputs["settings"]["edition"] == "ENTERPRISE"
    assert sql.inputs["deletionProtection"] is True
    assert sql.inputs["settings"]["deletionProtectionEnabled"] is True
    assert sql.protect is True


def test_staging_database_is_zonal_and_can_be_torn_down(staging: Graph) -> None:
    sql = staging.one(SQL)
    assert sql.inputs["settings"]["availabilityType"] == "ZONAL"
    assert sql.inputs["deletionProtection"] is False
    assert sql.protect is False


def test_app_user_is_abandoned_on_delete_and_its_password_lives_only_in_secrets(stack: Graph) -> None:
    user = stack.one("gcp:sql/user:User")
    assert user.inputs["deletionPolicy"] == "ABANDON"
    assert user.inputs["password"] == {"secret": "r" * 40}
    url = _secret_data(stack, "database-url")
    assert url == {"secret": f"postgresql://alle:{'r' * 40}@10.20.0.3:5432/alle?sslmode=require"}
    assert "r" * 40 not in repr(stack.outputs)
    for workload in workloads(stack):
        assert "r" * 40 not in repr(container(workload))


def _secret_data(graph: Graph, key: str) -> Any:
    [version] = [v for v in graph.of_type(SECRET_VERSION) if v.name == f"alle-{graph.stack}-{key}-v"]
    return version.inputs["secretData"]


def test_database_and_cache_wait_for_the_private_services_connection(stack: Graph) -> None:
    connection = stack.one(PSA)
    assert stack.depends_on(stack.one(SQL), connection)
    assert stack.depends_on(stack.one(REDIS), connection)


def test_memorystore_is_redis_7_private_with_auth_and_tls(stack: Graph) -> None:
    redis = stack.one(REDIS).inputs
    assert redis["redisVersion"] == "REDIS_7_2"
    assert redis["connectMode"] == "PRIVATE_SERVICE_ACCESS"
    assert redis["authEnabled"] is True
    assert redis["transitEncryptionMode"] == "SERVER_AUTHENTICATION"
    assert redis["reservedIpRange"] == f"alle-{stack.stack}-services"
    assert _secret_data(stack, "redis-url") == {"secret": "rediss://:mock-auth-string@10.20.1.4:6378/0"}
    assert _secret_data(stack, "redis-ca-cert")["secret"].startswith("-----BEGIN CERTIFICATE-----")


def test_redis_tier_is_standard_ha_in_production_and_basic_in_staging(staging: Graph, production: Graph) -> None:
    assert production.one(REDIS).inputs["tier"] == "STANDARD_HA"
    assert staging.one(REDIS).inputs["tier"] == "BASIC"


def test_uploads_bucket_is_private_uniform_versioned_with_expiring_old_versions(stack: Graph) -> None:
    bucket = stack.one(BUCKET).inputs
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["versioning"] == {"enabled": True}
    assert bucket["forceDestroy"] is (stack.stack == "staging")
    [rule] = bucket["lifecycleRules"]
    assert rule["action"]["type"] == "Delete"
    assert rule["condition"]["daysSinceNoncurrentTime"] == 30
    assert rule["condition"]["withState"] == "ARCHIVED"


def test_bucket_access_is_granted_on_the_bucket_to_the_runtime_identities_only(stack: Graph) -> None:
    grants = stack.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
    assert {g.inputs["member"] for g in grants} == {sa(stack, r) for r in ("web", "worker", "jobs")}
    assert {g.inputs["role"] for g in grants} == {"roles/storage.objectUser"}
    project_roles = {g.inputs["role"] for g in stack.of_type("gcp:projects/iAMMember:IAMMember")}
    assert not any(role.startswith("roles/storage.") for role in project_roles)


def test_secrets_exist_for_each_app_secret(stack: Graph) -> None:
    ids = {s.inputs["secretId"] for s in stack.of_type("gcp:secretmanager/secret:Secret")}
    prefix = f"alle-{stack.stack}"
    assert ids == {
        f"{prefix}-{k}" for k in ("database-url", "redis-url", "redis-ca-cert", "secret-key", "mail-api-key")
    }
    assert _secret_data(stack, "mail-api-key") == {"secret": MAIL_KEY}
    assert re.fullmatch(r"[a-zA-Z0-9]{64}", _secret_data(stack, "secret-key")["secret"])


def test_every_secret_reference_pins_a_version_number(stack: Graph) -> None:
    refs = [v["secretKeyRef"] for w in workloads(stack) for v in env(w).values() if isinstance(v, dict)]
    assert len(refs) == 5 * len(workloads(stack))
    assert all(ref["version"] == "1" for ref in refs)


def test_each_secret_is_readable_by_exactly_the_runtime_identities(stack: Graph) -> None:
    readers: dict[str, set[str]] = {}
    for grant in stack.of_type(SECRET_IAM):
        assert grant.inputs["role"] == "roles/secretmanager.secretAccessor"
        readers.setdefault(grant.inputs["secretId"], set()).add(grant.inputs["member"])
    assert len(readers) == 5
    assert all(members == {sa(stack, r) for r in ("web", "worker", "jobs")} for members in readers.values())


def test_identities_one_per_workload_without_primitive_or_project_wide_secret_roles(stack: Graph) -> None:
    accounts = {a.inputs["accountId"] for a in stack.of_type("gcp:serviceaccount/account:Account")}
    assert accounts == {f"alle-{stack.stack}-{r}" for r in ("web", "worker", "jobs", "scheduler")}
    assert all(len(a) <= 30 for a in accounts)
    roles = [r.inputs["role"] for r in stack.resources if "role" in r.inputs]
    assert not {"roles/owner", "roles/editor", "roles/viewer"} & set(roles)
    project_roles = {g.inputs["role"] for g in stack.of_type("gcp:projects/iAMMember:IAMMember")}
    assert "roles/secretmanager.secretAccessor" not in project_roles


def test_staging_builds_the_image_for_amd64_and_every_workload_runs_its_digest(staging: Graph) -> None:
    build = staging.one("docker:index/image:Image").inputs
    assert build["build"]["platform"] == "linux/amd64"
    assert build["build"]["context"] == "app"
    assert build["imageName"] == "europe-west1-docker.pkg.dev/alle-registry/alle/alle:dev"
    images = {container(w)["image"] for w in workloads(staging)}
    [image] = images
    assert re.fullmatch(r"europe-west1-docker\.pkg\.dev/alle-registry/alle/alle@sha256:[0-9a-f]{64}", image)
    assert staging.outputs["image"] == image


def test_production_never_builds_and_runs_the_pinned_digest_from_the_shared_registry(production: Graph) -> None:
    assert production.of_type("docker:index/image:Image") == []
    assert {container(w)["image"] for w in workloads(production)} == {PROMOTED}
    assert PROMOTED.startswith("europe-west1-docker.pkg.dev/alle-registry/alle/alle@sha256:")


def test_no_stack_declares_the_shared_registry_or_access_to_it(stack: Graph) -> None:
    """ops/bootstrap.sh owns the repository and every grant on it: a `pulumi destroy` or a replacement in either
    stack cannot delete it or the release images production runs, and no deployer needs to administer it."""
    assert [r.name for r in stack.resources if r.type.startswith("gcp:artifactregistry/")] == []
    assert [r.name for r in stack.resources if r.retain_on_delete] == []


def test_web_runs_alle_web_with_probes_scaling_and_sizing_per_stack(staging: Graph, production: Graph) -> None:
    expected = {"staging": (0, 3, 32, "1", "512Mi"), "production": (1, 20, 64, "2", "1Gi")}
    for graph in (staging, production):
        service = graph.one(SERVICE)
        template = service.inputs["template"]
        web = container(service)
        assert web["args"] == ["web"]
        # Started once PostgreSQL answers: a revision with a wrong DATABASE_URL never takes traffic.
        assert web["startupProbe"]["httpGet"]["path"] == "/readyz"
        assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert web["resources"]["startupCpuBoost"] is True
        sizing = (
            template["scaling"]["minInstanceCount"],
            template["scaling"]["maxInstanceCount"],
            template["maxInstanceRequestConcurrency"],
            web["resources"]["limits"]["cpu"],
            web["resources"]["limits"]["memory"],
        )
        assert sizing == expected[graph.stack]
        assert template["serviceAccount"] == sa(graph, "web")[len("serviceAccount:") :]


def test_a_new_web_instance_is_probed_every_second_and_given_30_seconds_to_start(stack: Graph) -> None:
    """A web process answers /readyz about 1 s after exec (README, Performance): a probe every 2 s made a new
    instance wait up to 2 s for Cloud Run to notice it."""
    probe = container(stack.one(SERVICE))["startupProbe"]
    assert (probe["periodSeconds"], probe["timeoutSeconds"]) == (1, 1)
    assert probe["periodSeconds"] * probe["failureThreshold"] == 30


def test_the_public_web_turns_the_invoker_check_off_instead_of_granting_all_users(stack: Graph) -> None:
    assert [r for r in stack.resources if r.inputs.get("member") in ("allUsers", "allAuthenticatedUsers")] == []
    assert [r.name for r in stack.resources if r.inputs.get("invokerIamDisabled")] == [f"alle-{stack.stack}-service"]


def test_web_is_private_when_public_is_false() -> None:
    private = deployed("staging", {"alle:public": "false"})
    assert private.one(SERVICE).inputs["invokerIamDisabled"] is False


def test_worker_pool_runs_alle_worker_with_instances_per_stack_and_no_ingress(
    staging: Graph, production: Graph
) -> None:
    for graph, count in ((staging, 1), (production, 2)):
        pool = graph.one(WORKER_POOL)
        assert container(pool)["args"] == ["worker"]
        assert pool.inputs["scaling"] == {"scalingMode": "MANUAL", "manualInstanceCount": count}
        assert "ingress" not in pool.inputs and "ports" not in container(pool)
        assert env(pool) == env(graph.one(SERVICE))


COMMANDS = ("migrate", "cleanup-old-tasks", "generate-report", "prune-sessions")


def test_migrate_job_runs_under_a_token_kept_per_image_and_release_and_admin_jobs_do_not(stack: Graph) -> None:
    jobs = {j.inputs["name"]: j for j in stack.of_type(JOB)}
    prefix = f"alle-{stack.stack}"
    assert set(jobs) == {f"{prefix}-{command}" for command in COMMANDS}
    migrate = jobs[f"{prefix}-migrate"]
    [random_id] = [r for r in stack.resources if r.type == "random:index/randomId:RandomId"]
    assert random_id.name == f"{prefix}-migrate-token" and random_id.inputs["byteLength"] == 4
    assert random_id.inputs["keepers"] == {"image": container(migrate)["image"], "release": "dev"}
    assert re.fullmatch(r"dev-[0-9a-f]{8}", migrate.inputs["runExecutionToken"])
    assert container(migrate)["args"] == ["migrate"]
    assert container(jobs[f"{prefix}-cleanup-old-tasks"])["args"] == ["cleanup-old-tasks", "--older-than-days", "90"]
    assert container(jobs[f"{prefix}-prune-sessions"])["args"] == ["prune-sessions"]
    for command in COMMANDS[1:]:
        assert "runExecutionToken" not in jobs[f"{prefix}-{command}"].inputs


def test_pulumi_up_waits_for_the_migrate_task_as_long_as_it_may_run(stack: Graph) -> None:
    [migrate] = [j for j in stack.of_type(JOB) if j.inputs["name"].endswith("-migrate")]
    task_timeout = int(migrate.inputs["template"]["template"]["timeout"].removesuffix("s"))
    for operation in ("create", "update"):
        minutes = int(migrate.timeouts[operation].removesuffix("m"))
        assert minutes * 60 > task_timeout, operation


def test_web_and_worker_depend_on_the_migrate_job(stack: Graph) -> None:
    [migrate] = [j for j in stack.of_type(JOB) if j.inputs["name"].endswith("-migrate")]
    assert stack.depends_on(stack.one(SERVICE), migrate)
    assert stack.depends_on(stack.one(WORKER_POOL), migrate)


def test_every_workload_waits_for_its_secret_versions_and_iam_grants(stack: Graph) -> None:
    versions, grants = stack.of_type(SECRET_VERSION), stack.of_type(SECRET_IAM)
    bucket_grants = stack.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
    for workload in workloads(stack):
        for needed in (*versions, *grants, *bucket_grants):
            assert stack.depends_on(workload, needed), f"{workload.name} does not wait for {needed.name}"


def test_nightly_jobs_run_outside_the_database_and_redis_maintenance_hours_which_fall_on_different_days(
    stack: Graph,
) -> None:
    """A job that needs a connection while Cloud SQL restarts fails, and its failure pages: the jobs ran at 03:00 and
    03:30 UTC, inside both weekly maintenance windows (each an hour from its start, and both on Sunday)."""
    sql = stack.one(SQL).inputs["settings"]["maintenanceWindow"]
    [redis_window] = stack.one("gcp:redis/instance:Instance").inputs["maintenancePolicy"]["weeklyMaintenanceWindows"]
    sql_day = ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"][int(sql["day"]) - 1]
    assert redis_window["day"] != sql_day
    busy_hours = {int(sql["hour"]), int(redis_window["startTime"]["hours"])}
    for job in stack.of_type("gcp:cloudscheduler/job:Job"):
        assert job.inputs["timeZone"] == "Etc/UTC", job.name
        _, hour, *every_day = job.inputs["schedule"].split()
        assert every_day == ["*", "*", "*"] and int(hour) not in busy_hours, (job.name, job.inputs["schedule"])


def test_scheduler_runs_the_nightly_jobs_through_the_admin_api_as_an_invoker_of_those_jobs_only(
    stack: Graph,
) -> None:
    prefix = f"alle-{stack.stack}"
    schedules = {j.inputs["name"]: j.inputs for j in stack.of_type("gcp:cloudscheduler/job:Job")}
    expected = {"cleanup-old-tasks": "0 5 * * *", "prune-sessions": "30 5 * * *"}
    assert set(schedules) == {f"{prefix}-{command}" for command in expected}
    for command, cron in expected.items():
        job = schedules[f"{prefix}-{command}"]
        assert job["httpTarget"]["uri"] == (
            f"https://run.googleapis.com/v2/projects/{prefix}/locations/europe-west1/jobs/{prefix}-{command}:run"
        )
        assert job["httpTarget"]["httpMethod"] == "POST"
        invoker = job["httpTarget"]["oauthToken"]["serviceAccountEmail"]
        assert invoker == sa(stack, "scheduler")[len("serviceAccount:") :]
        assert job["schedule"] == cron
    grants = [r for r in stack.resources if r.inputs.get("member") == sa(stack, "scheduler")]
    assert {g.type for g in grants} == {"gcp:cloudrunv2/jobIamMember:JobIamMember"}
    assert {(g.inputs["name"], g.inputs["role"]) for g in grants} == {
        (f"{prefix}-{command}", "roles/run.invoker") for command in expected
    }


def test_the_cleanup_schedule_keeps_its_state_under_its_former_names(stack: Graph) -> None:
    prefix = f"alle-{stack.stack}"
    scheduler = next(r for r in stack.resources if r.type == "alle:scheduler:Scheduler")
    aliases = {r.name: r.aliases for r in stack.resources if r.parent == scheduler.urn}
    assert aliases == {
        f"{prefix}-cleanup-old-tasks": [f"{prefix}-cleanup"],
        f"{prefix}-cleanup-old-tasks-invoker": [f"{prefix}-invoker"],
        f"{prefix}-prune-sessions": [],
        f"{prefix}-prune-sessions-invoker": [],
    }


# 5. Parity -----------------------------------------------------------------------------------------------------


def test_every_process_in_every_stack_gets_the_same_env_names(staging: Graph, production: Graph) -> None:
    names = {tuple(sorted(env(w))) for graph in (staging, production) for w in workloads(graph)}
    assert names == {tuple(APP_ENV_NAMES)}


def test_env_contract_matches_the_apps_own_list() -> None:
    from alle.config import CONTRACT_ENV

    assert sorted(CONTRACT_ENV) == APP_ENV_NAMES


def test_release_and_stack_reach_the_app_as_env(stack: Graph) -> None:
    for workload in workloads(stack):
        values = env(workload)
        assert (values["APP_ENV"], values["RELEASE"]) == (stack.stack, "dev")
        assert values["STORAGE_BUCKET"] == f"alle-{stack.stack}-alle-uploads"


def test_no_secret_is_passed_as_plain_env(stack: Graph) -> None:
    for workload in workloads(stack):
        for name in ("DATABASE_URL", "REDIS_URL", "REDIS_CA_CERT", "SECRET_KEY", "MAIL_API_KEY"):
            assert set(env(workload)[name]) == {"secretKeyRef"}


def test_stacks_differ_only_in_the_image_build_resources(staging: Graph, production: Graph) -> None:
    staging_types = {r.type for r in staging.resources}
    production_types = {r.type for r in production.resources}
    assert staging_types - production_types == {"docker:index/image:Image"}
    assert production_types - staging_types == set()


def test_release_id_reaches_the_app_unchanged_and_gcp_fields_in_their_own_forms() -> None:
    stamp = "2024-01-15T10:30:00Z"
    graph = deployed("staging", {"alle:release": stamp})
    assert graph.one("docker:index/image:Image").inputs["imageName"].endswith("/alle:2024-01-15T10-30-00Z")
    [migrate] = [j for j in graph.of_type(JOB) if j.inputs["name"].endswith("-migrate")]
    assert re.fullmatch(r"2024-01-15t10-30-00z-[0-9a-f]{8}", migrate.inputs["runExecutionToken"])
    assert {env(w)["RELEASE"] for w in workloads(graph)} == {stamp}
    assert {w.inputs["template"]["labels"]["release"] for w in workloads(graph)} == {"2024-01-15t10-30-00z"}
    assert "labels" not in graph.one(BUCKET).inputs or "release" not in graph.one(BUCKET).inputs["labels"]
    assert graph.outputs["release"] == stamp


def test_app_sizing_reaches_every_process_and_cloud_run_concurrency_is_its_product(
    staging: Graph, production: Graph
) -> None:
    for graph, (processes, per_process, pool) in ((staging, (1, 32, 3)), (production, (2, 32, 4))):
        for workload in workloads(graph):
            values = env(workload)
            assert (values["WEB_CONCURRENCY"], values["MAX_REQUESTS_IN_FLIGHT"], values["DATABASE_POOL_SIZE"]) == (
                str(processes),
                str(per_process),
                str(pool),
            )
        assert graph.one(SERVICE).inputs["template"]["maxInstanceRequestConcurrency"] == processes * per_process


# 6. Outputs, 7. Labels -----------------------------------------------------------------------------------------


def test_outputs_name_what_operators_need_and_no_secret(stack: Graph) -> None:
    out = stack.outputs
    prefix = f"alle-{stack.stack}"
    assert out["web_url"].startswith("https://")
    assert "@sha256:" in out["image"]
    assert (out["region"], out["release"], out["project"]) == ("europe-west1", "dev", prefix)
    assert out["jobs"] == {c: f"{prefix}-{c}" for c in COMMANDS}
    assert out["sql_connection_name"] == f"{prefix}:europe-west1:{prefix}-pg"
    assert out["bucket"] == f"{prefix}-alle-uploads"
    for leaked in ("mock-auth-string", MAIL_KEY, "r" * 40):
        assert leaked not in repr(out)


#: Their `labels` input is settings (a notification channel's address), not resource labels.
NOT_RESOURCE_LABELS = {"gcp:monitoring/notificationChannel:NotificationChannel"}
#: Where each labelled type keeps its labels; release-scoped ones (Cloud Run templates and jobs) add the release.
LABELLED: dict[str, list[tuple[tuple[str, ...], bool]]] = {
    SQL: [(("settings", "userLabels"), False)],
    REDIS: [(("labels",), False)],
    BUCKET: [(("labels",), False)],
    SERVICE: [(("labels",), False), (("template", "labels"), True)],
    WORKER_POOL: [(("labels",), False), (("template", "labels"), True)],
    JOB: [(("labels",), True), (("template", "labels"), True)],
    "gcp:secretmanager/secret:Secret": [(("labels",), False)],
}


def test_only_release_scoped_labels_carry_the_release(stack: Graph) -> None:
    checked = 0
    for resource in stack.custom():
        if resource.type in LABELLED:
            for path, release_scoped in LABELLED[resource.type]:
                value: Any = resource.inputs
                for key in path:
                    value = value[key]
                base = {"app": "alle", "stack": stack.stack}
                assert value == (base | {"release": "dev"} if release_scoped else base), (resource.name, path)
                checked += 1
        elif "labels" in resource.inputs and resource.type not in NOT_RESOURCE_LABELS:
            pytest.fail(f"{resource.type} has labels but is not in LABELLED")
    assert checked >= 18


@pytest.mark.parametrize("name", ["PORT", "K_SERVICE", "CLOUD_RUN_JOB", "X_GOOGLE_THING"])
def test_env_names_cloud_run_reserves_are_refused(name: str) -> None:
    from components.workload import Workload

    with pytest.raises(ValueError, match=f"Cloud Run reserves these env names: {name}"):
        Workload(image="i", env={name: "1"}, secrets={}, network_id="n", subnet_id="s", labels={}, release_labels={})


# First `pulumi up` in a fresh project: nothing uses an identity or a grant before GCP can honour it ----------------


def test_private_services_connection_waits_for_the_service_networking_agent_and_its_role(stack: Graph) -> None:
    agent = stack.one("gcp:projects/serviceIdentity:ServiceIdentity", f"alle-{stack.stack}-servicenetworking-agent")
    assert agent.inputs["service"] == "servicenetworking.googleapis.com"
    [role] = [
        g for g in stack.of_type("gcp:projects/iAMMember:IAMMember") if "service-networking" in g.inputs["member"]
    ]
    assert role.inputs["role"] == "roles/servicenetworking.serviceAgent"
    assert stack.depends_on(role, agent)
    assert stack.depends_on(stack.one(PSA), role)


def test_every_workload_starts_after_its_iam_grants_have_had_time_to_propagate(stack: Graph) -> None:
    [sleep] = stack.of_type("time:index/sleep:Sleep")
    assert int(sleep.inputs["createDuration"].removesuffix("s")) >= 120
    grants = [
        *stack.of_type(SECRET_IAM),
        *stack.of_type("gcp:storage/bucketIAMMember:BucketIAMMember"),
    ]
    assert all(stack.depends_on(sleep, grant) for grant in grants)
    assert all(stack.depends_on(workload, sleep) for workload in workloads(stack))


def test_values_gcp_owns_are_not_declared_back(stack: Graph) -> None:
    assert "settings.diskSize" in stack.one(SQL).ignore_changes
    for workload in workloads(stack):
        assert {"client", "clientVersion"} <= set(workload.ignore_changes), workload.name
    # Declared BETA, read back GA once worker pools are GA.
    assert "launchStage" in stack.one(WORKER_POOL).ignore_changes


def test_secret_versions_outlive_a_rotation(stack: Graph) -> None:
    assert {v.inputs["deletionPolicy"] for v in stack.of_type(SECRET_VERSION)} == {"ABANDON"}


@pytest.fixture(scope="module")
def fresh_staging(run_once: RunOnce) -> dict[str, Any]:
    """A run of staging made now, whatever this session or an earlier one has made and kept."""
    return run_once.fresh("staging", deployed_config("staging"))


def test_the_same_stack_and_config_register_the_same_twice(staging: Graph, fresh_staging: dict[str, Any]) -> None:
    """Tests share the runs of one stack and config (tests/stacks.py): a second, fresh run must agree with it.

    Registrations, and the dependencies in each, arrive in whatever order the program's outputs resolve, as they
    do in the engine; that order is the one thing two runs may differ in.
    """

    def canonical(graph: Graph) -> dict[str, Resource]:
        return {r.urn: replace(r, dependencies=sorted(r.dependencies)) for r in graph.resources}

    again = Graph("staging", fresh_staging)
    assert canonical(again) == canonical(staging)
    assert again.outputs == staging.outputs


def test_a_run_names_every_file_of_the_repository_it_read_with_its_digest_as_read(
    fresh_staging: dict[str, Any],
) -> None:
    """What a kept run is checked against (tests/stacks.py, ops/reads.py): the program and its components, which
    the run imports, ops' modules, which the server imported before forking it, and the directories the imports
    looked in, where a new module would be found."""
    inputs = fresh_staging["inputs"]
    components = [f"components/{p.name}" for p in (ROOT / "components").glob("*.py")]
    server = ["ops/program_server.py", "ops/reads.py", "ops/program.py", "ops/mocks.py"]
    assert {"__main__.py", *components, *server, "components/", "ops/"} <= set(inputs)
    # No file of the tests' or the app's: their directories may be listed, by imports that looked in what the
    # session had put on sys.path before the run's own began.
    elsewhere = ("venv/", "app/", "tests/", ".cache/")
    assert not [p for p in inputs if (p.startswith(elsewhere) and not p.endswith("/")) or "__pycache__" in p]
    files = [path for path in inputs if not path.endswith("/")]
    changed = [p for p in files if hashlib.sha256((ROOT / p).read_bytes()).hexdigest() != inputs[p]]
    assert changed == [], "unchanged since, so the same digests"
