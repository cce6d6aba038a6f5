"""The stack's configuration: every key read once, typed, and validated before any resource is declared.

Defaults live in Pulumi.yaml only; the stack files carry the per-stack sizing keys (PER_STACK_KEYS).
Every problem is reported at once, each as one sentence naming the stack, key, value and what is allowed.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import pulumi
from pulumi.runtime import config as runtime_config

from components import release as releases

T = TypeVar("T")

ENVIRONMENTS = ("staging", "production")

#: The only keys whose values may differ between Pulumi.staging.yaml and Pulumi.production.yaml.
PER_STACK_KEYS = (
    "alle:dbTier",
    "alle:dbHighAvailability",
    "alle:dbDiskSizeGb",
    "alle:redisTier",
    "alle:redisMemoryGb",
    "alle:webMinInstances",
    "alle:webMaxInstances",
    "alle:webProcesses",
    "alle:webRequestsPerProcess",
    "alle:dbPoolSize",
    "alle:webCpu",
    "alle:webMemory",
    "alle:workerInstances",
    "alle:workerCpu",
    "alle:workerMemory",
    "alle:image",
    "alle:registryProject",
    "alle:registryLocation",
    "alle:domain",
    "alle:dnsZone",
    "alle:wafPreview",
    "alle:alertEmails",
    "alle:billingAccount",
    "alle:budgetMonthlyUsd",
    "alle:webTraffic",
    "alle:previousRevision",
)

#: Regions where Cloud Run (services, jobs, worker pools, Direct VPC egress), Cloud SQL and Memorystore all run.
REGIONS = frozenset(
    {
        "asia-east1",
        "asia-northeast1",
        "asia-south1",
        "asia-southeast1",
        "australia-southeast1",
        "europe-north1",
        "europe-southwest1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "me-west1",
        "northamerica-northeast1",
        "southamerica-east1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-south1",
        "us-west1",
        "us-west2",
        "us-west4",
    }
)

#: Cloud Run CPU → (min, max) memory in MiB, second-generation execution environment.
CLOUD_RUN_MEMORY_MIB = {"1": (512, 4096), "2": (512, 8192), "4": (2048, 16384), "6": (4096, 24576), "8": (4096, 32768)}

#: Cloud SQL Enterprise edition shared-core tiers (not covered by the SLA; staging only).
SHARED_CORE_TIERS = frozenset({"db-f1-micro", "db-g1-small"})
DB_CUSTOM = re.compile(r"^db-custom-(\d+)-(\d+)$")
PERF_OPTIMIZED = re.compile(r"^db-perf-optimized-N-(2|4|8|16|32|48|64|80|96|128)$")

IMAGE_DIGEST = re.compile(r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+@sha256:[0-9a-f]{64}$")
RELEASE = releases.RELEASE_ID
PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
MEMORY = re.compile(r"^(\d+)(Mi|Gi)$")
CRON = re.compile(r"^(\S+\s+){4}\S+$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(Exception):
    """All invalid keys of a stack, one sentence each."""


@dataclass(frozen=True)
class Sizing:
    cpu: str
    memory: str


@dataclass(frozen=True)
class StackConfig:
    stack: str
    project: str
    region: str
    release: str
    image: str | None
    public: bool
    log_level: str
    registry_project: str
    registry_location: str
    registry_repository: str
    db_tier: str
    db_edition: str
    db_high_availability: bool
    db_disk_size_gb: int
    db_backup_retention_count: int
    db_pitr_days: int
    redis_tier: str
    redis_memory_gb: int
    redis_version: str
    web_min_instances: int
    web_max_instances: int
    web_processes: int
    web_requests_per_process: int
    db_pool_size: int
    web: Sizing
    worker_instances: int
    worker: Sizing
    jobs: Sizing
    subnet_cidr: str
    services_range_prefix: int
    uploads_noncurrent_days: int
    cleanup_schedule: str
    cleanup_older_than_days: int
    prune_sessions_schedule: str
    time_zone: str
    mail_from: str
    mail_api_key: pulumi.Output[str]
    edge: EdgeConfig
    observability: ObservabilityConfig
    delivery: DeliveryConfig

    @property
    def environment(self) -> str:
        return self.stack

    @property
    def production(self) -> bool:
        """One flag decides deletion protection and Pulumi `protect` for every stateful resource."""
        return self.stack == "production"

    @property
    def prefix(self) -> str:
        return f"alle-{self.stack}"

    @property
    def labels(self) -> dict[str, str]:
        """Labels of every long-lived resource. No release here: a label change is a patch of the resource, and
        Cloud SQL runs one operation at a time, refusing a patch while a backup or maintenance runs
        (https://cloud.google.com/sql/docs/postgres/troubleshooting, "operation ... already in progress")."""
        return {"app": "alle", "stack": self.stack}

    @property
    def release_labels(self) -> dict[str, str]:
        """Labels of what each release replaces anyway: Cloud Run revisions (templates) and jobs."""
        return {**self.labels, "release": releases.label_value(self.release)}

    @property
    def web_container_concurrency(self) -> int:
        """Cloud Run's requests per instance: every uvicorn process takes its own share."""
        return self.web_processes * self.web_requests_per_process

    @property
    def trusted_proxy_hops(self) -> int:
        """X-Forwarded-For entries our front ends append (app/alle/api/forwarded.py): Cloud Run's front end appends
        `<client-ip>`; the external Application Load Balancer `<client-ip>,<load-balancer-ip>`
        (https://cloud.google.com/load-balancing/docs/https, "X-Forwarded-For header")."""
        return 2 if self.edge.domain else 1

    @property
    def app_env(self) -> dict[str, str]:
        """What the app reads of this config: the sizing, set here together with Cloud Run's concurrency so the two
        cannot drift, and how far to trust X-Forwarded-For, set from the same edge config that builds the LB."""
        return {
            "DATABASE_POOL_SIZE": str(self.db_pool_size),
            "WEB_CONCURRENCY": str(self.web_processes),
            "MAX_REQUESTS_IN_FLIGHT": str(self.web_requests_per_process),
            "TRUSTED_PROXY_HOPS": str(self.trusted_proxy_hops),
        }


class _Reader:
    """Reads raw strings and records one sentence per bad value instead of stopping at the first."""

    def __init__(self, stack: str, raw: Mapping[str, str]) -> None:
        self.stack = stack
        self.raw = raw
        self.errors: list[str] = []

    def fail(self, key: str, value: object, allowed: str) -> None:
        self.errors.append(f"Stack '{self.stack}': {key} is {value!r}; {allowed}.")

    def missing(self, key: str, allowed: str) -> None:
        where = (
            f"set it in Pulumi.{self.stack}.yaml" if key.startswith("gcp:") else "declare its default in Pulumi.yaml"
        )
        self.errors.append(
            f"Stack '{self.stack}': {key} is not set; {where} (`pulumi config set {key} … --stack {self.stack}`), "
            f"{allowed}."
        )

    def get(self, key: str, parse: Callable[[str], T], allowed: str, fallback: T) -> T:
        value = self.raw.get(key)
        if value is None:
            self.missing(key, allowed)
            return fallback
        try:
            return parse(value)
        except ValueError:
            self.fail(key, value, allowed)
            return fallback

    def string(self, key: str, pattern: re.Pattern[str] | None = None, allowed: str = "any text") -> str:
        def parse(value: str) -> str:
            if pattern is not None and not pattern.match(value):
                raise ValueError
            return value

        return self.get(key, parse, allowed, "")

    def choice(self, key: str, options: tuple[str, ...] | frozenset[str]) -> str:
        allowed = "allowed: " + ", ".join(sorted(options))

        def parse(value: str) -> str:
            if value not in options:
                raise ValueError
            return value

        return self.get(key, parse, allowed, sorted(options)[0])

    def integer(self, key: str, low: int, high: int) -> int:
        def parse(value: str) -> int:
            number = int(value)
            if not low <= number <= high:
                raise ValueError
            return number

        return self.get(key, parse, f"allowed: a whole number from {low} to {high}", low)

    def boolean(self, key: str) -> bool:
        def parse(value: str) -> bool:
            if value.lower() not in ("true", "false"):
                raise ValueError
            return value.lower() == "true"

        return self.get(key, parse, "allowed: true or false", False)


def _mib(memory: str) -> int:
    match = MEMORY.match(memory)
    if not match:
        raise ValueError(memory)
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def _sizing(reader: _Reader, prefix: str) -> Sizing:
    cpu = reader.choice(f"alle:{prefix}Cpu", frozenset(CLOUD_RUN_MEMORY_MIB))
    key = f"alle:{prefix}Memory"
    memory = reader.string(key, MEMORY, "allowed: a size such as 512Mi or 2Gi")
    if memory and cpu in CLOUD_RUN_MEMORY_MIB:
        low, high = CLOUD_RUN_MEMORY_MIB[cpu]
        if not low <= _mib(memory) <= high:
            reader.fail(key, memory, f"with {cpu} CPU Cloud Run allows {low}Mi to {high}Mi")
    return Sizing(cpu=cpu, memory=memory)


def _db_edition(reader: _Reader, tier: str, production: bool) -> str:
    """Cloud SQL pairs tiers with editions: Enterprise runs shared-core and db-custom, Plus perf-optimized."""
    if PERF_OPTIMIZED.match(tier):
        return "ENTERPRISE_PLUS"
    custom = DB_CUSTOM.match(tier)
    if custom:
        cpus, memory = int(custom[1]), int(custom[2])
        cpus_ok = cpus == 1 or (cpus % 2 == 0 and 2 <= cpus <= 96)
        memory_ok = memory % 256 == 0 and memory >= 3840 and 0.9 * 1024 * cpus <= memory <= 6.5 * 1024 * cpus
        if not (cpus_ok and memory_ok):
            reader.fail(
                "alle:dbTier",
                tier,
                "db-custom-CPUS-MIB needs 1 or an even number of CPUs up to 96 and "
                "0.9–6.5 GiB per CPU in multiples of 256 MiB, at least 3840 MiB",
            )
        return "ENTERPRISE"
    if tier in SHARED_CORE_TIERS:
        if production:
            reader.fail(
                "alle:dbTier",
                tier,
                "production needs a dedicated-core tier (db-custom-… or "
                "db-perf-optimized-N-…), shared-core tiers have no SLA",
            )
        return "ENTERPRISE"
    reader.fail(
        "alle:dbTier", tier, "allowed: db-f1-micro, db-g1-small, db-custom-CPUS-MIB or db-perf-optimized-N-CPUS"
    )
    return "ENTERPRISE"


#: Keys with one value for every stack (their defaults are in Pulumi.yaml).
SHARED_KEYS = (
    "alle:release",
    "alle:public",
    "alle:logLevel",
    "alle:registryRepository",
    "alle:dbBackupRetentionCount",
    "alle:dbPitrDays",
    "alle:redisVersion",
    "alle:jobsCpu",
    "alle:jobsMemory",
    "alle:subnetCidr",
    "alle:servicesRangePrefix",
    "alle:uploadsNoncurrentDays",
    "alle:cleanupSchedule",
    "alle:cleanupOlderThanDays",
    "alle:pruneSessionsSchedule",
    "alle:timeZone",
    "alle:mailFrom",
    "alle:authRateLimit",
    "alle:authRateLimitIntervalSec",
    "alle:wafRules",
    "alle:wafSensitivity",
)
#: Every plain key the program reads (the secret alle:mailApiKey is read on its own).
KEYS = ("gcp:project", "gcp:region", *PER_STACK_KEYS, *SHARED_KEYS)
#: Keys Pulumi.yaml declares secret: set with `pulumi config set --secret`, never with a default.
SECRET_KEYS = ("alle:mailApiKey",)
#: Keys this program used to read, and what replaced them.
RENAMED = {
    "alle:webConcurrency": "it became alle:webProcesses × alle:webRequestsPerProcess (Cloud Run's concurrency)",
}
#: Namespaces a stack file may use besides alle: the providers' own settings and Pulumi's.
PROVIDER_NAMESPACES = ("gcp", "docker", "random", "time", "pulumi")

#: Cloud SQL for PostgreSQL's default max_connections by instance memory (GiB, lower bound → connections):
#: https://cloud.google.com/sql/docs/postgres/flags#postgres-m (max_connections) and
#: https://cloud.google.com/sql/docs/postgres/quotas#cloud-sql-for-postgresql-connection-limits
MAX_CONNECTIONS_BY_MEMORY_GIB = ((120, 1000), (60, 800), (30, 600), (15, 500), (7.5, 400), (6, 200), (3.75, 100))
SHARED_CORE_MAX_CONNECTIONS = {"db-f1-micro": 25, "db-g1-small": 50}
#: Enterprise Plus performance-optimized tiers have 8 GiB per vCPU:
#: https://cloud.google.com/sql/docs/postgres/machine-series-overview
PERF_OPTIMIZED_GIB_PER_CPU = 8
#: Connections nobody in the app may count on: PostgreSQL keeps superuser_reserved_connections (3) for
#: cloudsqladmin (https://www.postgresql.org/docs/16/runtime-config-connection.html), plus two for an operator.
RESERVED_CONNECTIONS = 5
#: Cloud Run jobs that open a pool: migrate, cleanup-old-tasks, generate-report, prune-sessions.
JOB_COUNT = 4
#: Cloud Run's highest concurrency per instance: https://cloud.google.com/run/docs/about-concurrency
CLOUD_RUN_MAX_CONCURRENCY = 1000


def max_connections(tier: str) -> int | None:
    """The default max_connections of a Cloud SQL tier, or None for a tier this program does not know."""
    if tier in SHARED_CORE_MAX_CONNECTIONS:
        return SHARED_CORE_MAX_CONNECTIONS[tier]
    custom, perf = DB_CUSTOM.match(tier), PERF_OPTIMIZED.match(tier)
    if custom:
        memory_gib = int(custom[2]) / 1024
    elif perf:
        memory_gib = int(perf[1]) * PERF_OPTIMIZED_GIB_PER_CPU
    else:
        return None
    return next((count for floor, count in MAX_CONNECTIONS_BY_MEMORY_GIB if memory_gib >= floor), None)


def _known_keys() -> frozenset[str]:
    return frozenset((*KEYS, *SECRET_KEYS))


def _gcp_keys() -> frozenset[str]:
    """Every setting the gcp provider reads (pulumi_gcp.config), as `gcp:camelCase`."""
    import pulumi_gcp.config

    # The SDK loads the module lazily; reading one setting turns it into the class that declares them all.
    _ = pulumi_gcp.config.project
    settings = type(sys.modules["pulumi_gcp.config"])

    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(part.capitalize() for part in rest)

    names = [n for n in dir(settings) if isinstance(getattr(settings, n, None), property)]
    return frozenset(f"gcp:{camel(n)}" for n in names)


def _check_keys(reader: _Reader) -> None:
    """A key the program does not read is a typo until proven otherwise: refuse it and name the closest one."""
    known = _known_keys()
    gcp_keys: frozenset[str] | None = None
    for key in sorted(reader.raw):
        namespace = key.split(":", 1)[0] if ":" in key else ""
        if key in known or (namespace in PROVIDER_NAMESPACES and namespace != "gcp"):
            continue
        if namespace == "gcp":
            gcp_keys = gcp_keys if gcp_keys is not None else _gcp_keys()
            if key in gcp_keys:
                continue
            candidates = sorted(gcp_keys | {k for k in known if k.startswith("gcp:")})
        else:
            candidates = sorted(known)
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
        if key in RENAMED:
            hint = RENAMED[key]
        elif close:
            hint = f"the closest known key is {close[0]}"
        else:
            hint = "the known keys are the ones Pulumi.yaml declares"
        reader.fail(key, reader.raw[key], f"no such key, {hint}")


def _check_connection_budget(reader: _Reader, config: StackConfig) -> None:
    """Every process's pool must fit under the tier's max_connections at the worst moment: a web rollout, when the
    old and the new revision may both run at their maximum instance count."""
    limit = max_connections(config.db_tier)
    if limit is None:
        return
    pool = config.db_pool_size
    web = config.web_max_instances * config.web_processes * pool * 2
    worker = config.worker_instances * pool
    jobs = JOB_COUNT * pool
    need = web + worker + jobs + RESERVED_CONNECTIONS
    if need > limit:
        reader.errors.append(
            f"Stack '{reader.stack}': the database needs {need} connections, as alle:webMaxInstances "
            f"{config.web_max_instances} × alle:webProcesses {config.web_processes} × alle:dbPoolSize {pool} × 2 "
            f"for rollout overlap ({web}) + alle:workerInstances {config.worker_instances} × {pool} ({worker}) + "
            f"{JOB_COUNT} jobs × {pool} ({jobs}) + {RESERVED_CONNECTIONS} reserved, but alle:dbTier "
            f"{config.db_tier} allows max_connections {limit}; lower those values or choose a larger alle:dbTier."
        )


DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
DNS_ZONE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
BILLING_ACCOUNT = re.compile(r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$")
#: Cloud Armor's preconfigured WAF rules on OWASP CRS 3.3 (https://cloud.google.com/armor/docs/waf-rules), but for
#: methodenforcement: its one rule, CRS 911100, allows only GET, HEAD, POST and OPTIONS unless the CRS setup says
#: otherwise, which Cloud Armor's managed copy cannot (coreruleset/coreruleset#1863), and the API edits and deletes
#: tasks with PATCH and DELETE. The app answers 405 to a method a route does not take.
WAF_RULE = re.compile(
    r"^(sqli|xss|lfi|rfi|rce|scannerdetection|protocolattack|php|sessionfixation|java|nodejs)-v33-(stable|canary)$"
)
#: The only rate_limit_threshold.interval_sec values Cloud Armor accepts
#: (https://cloud.google.com/armor/docs/rate-limiting-overview#thresholds).
RATE_LIMIT_INTERVALS = (10, 30, 60, 120, 180, 240, 300, 600, 900, 1200, 1800, 2700, 3600)


@dataclass(frozen=True)
class EdgeConfig:
    """The custom domain in front of the web service, and the Cloud Armor policy on it. No domain, no edge."""

    domain: str
    dns_zone: str
    auth_rate_limit: int
    auth_rate_limit_interval_sec: int
    waf_rules: tuple[str, ...]
    waf_sensitivity: int
    waf_preview: bool


@dataclass(frozen=True)
class ObservabilityConfig:
    alert_emails: tuple[str, ...]
    billing_account: str
    budget_monthly_usd: int


@dataclass(frozen=True)
class DeliveryConfig:
    """This release's share of web traffic; the rest stays on the previous revision."""

    previous_revision: str
    web_traffic: int


def _strings(reader: _Reader, key: str, item: re.Pattern[str], allowed: str) -> tuple[str, ...]:
    """A list key: Pulumi hands structured config to the program as JSON text."""

    def parse(value: str) -> tuple[str, ...]:
        items = json.loads(value) if value.strip() else []
        if not isinstance(items, list) or not all(isinstance(i, str) and item.match(i) for i in items):
            raise ValueError(value)
        return tuple(items)

    return reader.get(key, parse, allowed, ())


def _edge(reader: _Reader, production: bool) -> EdgeConfig:
    domain = reader.string("alle:domain", re.compile(f"^$|{DOMAIN.pattern}"), "allowed: empty or a lowercase DNS name")
    dns_zone = reader.string("alle:dnsZone", re.compile(f"^$|{DNS_ZONE.pattern}"), "allowed: empty or a zone name")
    if dns_zone and not domain:
        reader.fail("alle:dnsZone", dns_zone, "a Cloud DNS zone needs alle:domain set")
    waf_preview = reader.boolean("alle:wafPreview")
    if production and waf_preview:
        reader.fail("alle:wafPreview", "true", "production enforces the OWASP rules (false)")
    interval = reader.integer("alle:authRateLimitIntervalSec", 10, 3600)
    if interval not in RATE_LIMIT_INTERVALS:
        reader.fail(
            "alle:authRateLimitIntervalSec",
            str(interval),
            "allowed: " + ", ".join(map(str, RATE_LIMIT_INTERVALS)) + " (Cloud Armor's intervals)",
        )
    return EdgeConfig(
        domain=domain,
        dns_zone=dns_zone,
        auth_rate_limit=reader.integer("alle:authRateLimit", 1, 10000),
        auth_rate_limit_interval_sec=interval,
        waf_rules=_strings(
            reader,
            "alle:wafRules",
            WAF_RULE,
            "allowed: a list of Cloud Armor CRS 3.3 rule names, methodenforcement aside (it refuses PATCH and DELETE)",
        ),
        waf_sensitivity=reader.integer("alle:wafSensitivity", 1, 4),
        waf_preview=waf_preview,
    )


def _observability(reader: _Reader, production: bool) -> ObservabilityConfig:
    emails = _strings(reader, "alle:alertEmails", EMAIL, "allowed: a list of email addresses")
    if production and not emails:
        reader.fail("alle:alertEmails", "[]", "production alerts must reach someone: list at least one address")
    account = reader.string(
        "alle:billingAccount",
        re.compile(f"^$|{BILLING_ACCOUNT.pattern}"),
        "allowed: empty or a billing account id (XXXXXX-XXXXXX-XXXXXX)",
    )
    return ObservabilityConfig(
        alert_emails=emails,
        billing_account=account,
        budget_monthly_usd=reader.integer("alle:budgetMonthlyUsd", 1, 1_000_000),
    )


def _delivery(reader: _Reader) -> DeliveryConfig:
    return DeliveryConfig(
        previous_revision=reader.string(
            "alle:previousRevision",
            re.compile(r"^$|^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"),
            "allowed: empty or a Cloud Run revision name (the web_revision output of a deploy)",
        ),
        web_traffic=reader.integer("alle:webTraffic", 0, 100),
    )


def parse(stack: str, raw: Mapping[str, str], mail_api_key: pulumi.Output[str]) -> StackConfig:
    """Validate the raw `namespace:key` strings of one stack; raise ConfigError listing every problem."""
    reader = _Reader(stack, raw)
    if stack not in ENVIRONMENTS:
        reader.fail("stack name", stack, "allowed: " + " or ".join(ENVIRONMENTS) + " (the stack name is APP_ENV)")
    _check_keys(reader)
    production = stack == "production"
    project = reader.string(
        "gcp:project", PROJECT_ID, "allowed: a GCP project id (6–30 lowercase letters, digits and hyphens)"
    )
    region = reader.choice("gcp:region", REGIONS)
    image = raw.get("alle:image") or None
    if image is not None and not IMAGE_DIGEST.match(image):
        reader.fail(
            "alle:image",
            image,
            "allowed: empty (build from app/) or a reference pinned by digest, REGISTRY/PATH@sha256:<64 hex>",
        )
    if production and image is None:
        reader.fail("alle:image", "", "production never builds: pin the digest staging runs (`./bin/alle-ops promote`)")
    # Derived from gcp:project and gcp:region: checked only when those are valid, so one mistake is one line.
    # A registry inside the stack's own project would be in that environment's deploys' reach (ops/bootstrap.sh).
    registry_project = raw.get("alle:registryProject", "")
    if not PROJECT_ID.match(registry_project) or registry_project == project:
        reader.fail(
            "alle:registryProject",
            registry_project,
            "allowed: the id of the registry's own project, the one given to ops/bootstrap.sh --registry-project"
            " (not gcp:project)",
        )
    registry_location = raw.get("alle:registryLocation") or region
    if registry_location and registry_location not in REGIONS:
        reader.fail("alle:registryLocation", registry_location, "allowed: " + ", ".join(sorted(REGIONS)))
    db_tier = reader.string("alle:dbTier")
    db_high_availability = reader.boolean("alle:dbHighAvailability")
    redis_tier = reader.choice("alle:redisTier", ("BASIC", "STANDARD_HA"))
    if production and not db_high_availability:
        reader.fail("alle:dbHighAvailability", "false", "production requires regional high availability (true)")
    if production and redis_tier != "STANDARD_HA":
        reader.fail("alle:redisTier", redis_tier, "production requires STANDARD_HA")
    web_min = reader.integer("alle:webMinInstances", 0, 100)
    web_max = reader.integer("alle:webMaxInstances", 1, 1000)
    if web_min > web_max:
        reader.fail("alle:webMinInstances", str(web_min), f"it must not exceed alle:webMaxInstances ({web_max})")
    web_processes = reader.integer("alle:webProcesses", 1, 16)
    per_process = reader.integer("alle:webRequestsPerProcess", 1, CLOUD_RUN_MAX_CONCURRENCY)
    if web_processes * per_process > CLOUD_RUN_MAX_CONCURRENCY:
        reader.fail(
            "alle:webRequestsPerProcess",
            str(per_process),
            f"alle:webProcesses {web_processes} × it is Cloud Run's concurrency per instance, "
            f"at most {CLOUD_RUN_MAX_CONCURRENCY}",
        )
    config = StackConfig(
        stack=stack,
        project=project,
        region=region,
        release=reader.string("alle:release", RELEASE, releases.RELEASE_ID_ALLOWED),
        image=image,
        public=reader.boolean("alle:public"),
        log_level=reader.choice("alle:logLevel", LOG_LEVELS),
        registry_project=registry_project,
        registry_location=registry_location,
        registry_repository=reader.string(
            "alle:registryRepository",
            re.compile(r"^[a-z][a-z0-9-]{0,62}$"),
            "allowed: lowercase letters, digits and hyphens",
        ),
        db_tier=db_tier,
        db_edition=_db_edition(reader, db_tier, production) if db_tier else "ENTERPRISE",
        db_high_availability=db_high_availability,
        db_disk_size_gb=reader.integer("alle:dbDiskSizeGb", 10, 65536),
        db_backup_retention_count=reader.integer("alle:dbBackupRetentionCount", 1, 365),
        db_pitr_days=reader.integer("alle:dbPitrDays", 1, 7),
        redis_tier=redis_tier,
        redis_memory_gb=reader.integer("alle:redisMemoryGb", 1, 300),
        redis_version=reader.choice("alle:redisVersion", ("REDIS_7_0", "REDIS_7_2")),
        web_min_instances=web_min,
        web_max_instances=web_max,
        web_processes=web_processes,
        web_requests_per_process=per_process,
        db_pool_size=reader.integer("alle:dbPoolSize", 1, 100),
        web=_sizing(reader, "web"),
        worker_instances=reader.integer("alle:workerInstances", 0, 100),
        worker=_sizing(reader, "worker"),
        jobs=_sizing(reader, "jobs"),
        subnet_cidr=reader.string(
            "alle:subnetCidr",
            re.compile(r"^10\.\d{1,3}\.\d{1,3}\.0/(2[0-6]|1\d)$"),
            "allowed: a private 10.x.y.0 range of /26 or larger, as Direct VPC egress needs",
        ),
        services_range_prefix=reader.integer("alle:servicesRangePrefix", 16, 24),
        uploads_noncurrent_days=reader.integer("alle:uploadsNoncurrentDays", 1, 3650),
        cleanup_schedule=reader.string("alle:cleanupSchedule", CRON, "allowed: a five-field cron expression"),
        cleanup_older_than_days=reader.integer("alle:cleanupOlderThanDays", 1, 3650),
        prune_sessions_schedule=reader.string(
            "alle:pruneSessionsSchedule", CRON, "allowed: a five-field cron expression"
        ),
        time_zone=reader.string("alle:timeZone", re.compile(r"^[A-Za-z_]+(/[A-Za-z_+-]+)*$"), "allowed: a tz name"),
        mail_from=reader.string("alle:mailFrom", EMAIL, "allowed: an email address"),
        mail_api_key=mail_api_key,
        edge=_edge(reader, production),
        observability=_observability(reader, production),
        delivery=_delivery(reader),
    )
    budget_keys = (
        "alle:dbTier",
        "alle:webMaxInstances",
        "alle:webProcesses",
        "alle:dbPoolSize",
        "alle:workerInstances",
    )
    if not any(f"{key} " in error for error in reader.errors for key in budget_keys):
        _check_connection_budget(reader, config)
    if reader.errors:
        raise ConfigError("\n".join(reader.errors))
    return config


def load() -> StackConfig:
    """Read every key of the running stack once, and refuse keys nobody reads."""
    namespaces = {"gcp": pulumi.Config("gcp"), "alle": pulumi.Config("alle")}
    raw: dict[str, str] = {}
    for key in KEYS:
        namespace, name = key.split(":")
        value = namespaces[namespace].get(name)
        if value is not None:
            raw[key] = value
    for key, value in {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}.items():
        if key not in raw and key not in SECRET_KEYS:
            # A misspelt secret key is reported by name only: its value must not reach the log.
            raw[key] = "[secret]" if runtime_config.is_config_secret(key) else str(value)
    mail_api_key = namespaces["alle"].require_secret("mailApiKey")
    return parse(pulumi.get_stack(), raw, mail_api_key)
