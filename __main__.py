"""alle: one release of the Alle image per stack. Load config, build components, export outputs."""

import pulumi

from components import config as stack_config
from components.apis import Apis, ApisArgs
from components.budget import Budget, BudgetArgs
from components.cache import Cache, CacheArgs
from components.database import Database, DatabaseArgs
from components.edge import Edge, EdgeArgs
from components.identity import Identity, IdentityArgs
from components.image import Image, ImageArgs
from components.jobs import Jobs, JobsArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.network import Network, NetworkArgs
from components.propagation import Propagation, PropagationArgs
from components.scheduler import Schedule, Scheduler, SchedulerArgs
from components.secrets import Secrets, SecretsArgs
from components.services import Web, WebArgs, Worker, WorkerArgs
from components.storage import Storage, StorageArgs
from components.workload import Workload

cfg = stack_config.load()
name = cfg.prefix
common = {"project": cfg.project}

apis = Apis(name, ApisArgs(project=cfg.project))

network = Network(
    name,
    NetworkArgs(
        **common,
        region=cfg.region,
        subnet_cidr=cfg.subnet_cidr,
        services_range_prefix=cfg.services_range_prefix,
        production=cfg.production,
        depends_on=apis.needs("compute", "servicenetworking", "resourcemanager"),
    ),
)

identity = Identity(name, IdentityArgs(**common, prefix=name, depends_on=apis.needs("iam", "resourcemanager")))

database = Database(
    name,
    DatabaseArgs(
        **common,
        region=cfg.region,
        prefix=name,
        tier=cfg.db_tier,
        edition=cfg.db_edition,
        high_availability=cfg.db_high_availability,
        disk_size_gb=cfg.db_disk_size_gb,
        backup_retention_count=cfg.db_backup_retention_count,
        pitr_days=cfg.db_pitr_days,
        production=cfg.production,
        network_id=network.network_id,
        labels=cfg.labels,
        depends_on=[*apis.needs("sql"), network.private_services],
    ),
)

cache = Cache(
    name,
    CacheArgs(
        **common,
        region=cfg.region,
        prefix=name,
        tier=cfg.redis_tier,
        memory_gb=cfg.redis_memory_gb,
        redis_version=cfg.redis_version,
        production=cfg.production,
        network_id=network.network_id,
        reserved_range=network.services_range_name,
        labels=cfg.labels,
        depends_on=[*apis.needs("redis"), network.private_services],
    ),
)

storage = Storage(
    name,
    StorageArgs(
        **common,
        region=cfg.region,
        noncurrent_days=cfg.uploads_noncurrent_days,
        production=cfg.production,
        members=identity.runtime_members,
        labels=cfg.labels,
        depends_on=apis.needs("storage"),
    ),
)

secrets = Secrets(
    name,
    SecretsArgs(
        **common,
        prefix=name,
        readers=identity.runtime_members,
        labels=cfg.labels,
        values={
            "DATABASE_URL": database.url,
            "REDIS_URL": cache.url,
            "REDIS_CA_CERT": cache.ca_cert,
            "MAIL_API_KEY": cfg.mail_api_key,
        },
        generated=["SECRET_KEY"],
        depends_on=apis.needs("secretmanager"),
    ),
)

image = Image(
    name,
    ImageArgs(
        **common,
        release=cfg.release,
        pinned=cfg.image,
        registry_project=cfg.registry_project,
        registry_location=cfg.registry_location,
        repository=cfg.registry_repository,
    ),
)

# New grants take minutes to apply everywhere; no revision starts before they have.
propagation = Propagation(name, PropagationArgs(grants=[*secrets.grants, *storage.grants]))

workload = Workload(
    image=image.ref,
    env={
        "APP_ENV": cfg.environment,
        "RELEASE": cfg.release,
        "LOG_LEVEL": cfg.log_level,
        "STORAGE_BUCKET": storage.bucket_name,
        "GOOGLE_CLOUD_PROJECT": cfg.project,
        "MAIL_FROM": cfg.mail_from,
        **cfg.app_env,
    },
    secrets=secrets.refs,
    network_id=network.network_id,
    subnet_id=network.subnet_id,
    labels=cfg.labels,
    release_labels=cfg.release_labels,
    ready=[*secrets.ready, *storage.grants, propagation.sleep],
)
run_apis = apis.needs("run")

jobs = Jobs(
    name,
    JobsArgs(
        **common,
        region=cfg.region,
        prefix=name,
        release=cfg.release,
        production=cfg.production,
        workload=workload,
        service_account=identity.emails["jobs"],
        sizing=cfg.jobs,
        cleanup_older_than_days=cfg.cleanup_older_than_days,
        depends_on=[*run_apis, database.user, database.database],
    ),
)

# Web and worker roll out only after this release's migration succeeded. Web's new revision is named after the
# release and takes alle:webTraffic percent; alle:previousRevision keeps the rest.
web_service = f"{name}-web"
web = Web(
    name,
    WebArgs(
        **common,
        region=cfg.region,
        prefix=name,
        production=cfg.production,
        public=cfg.public,
        workload=workload,
        service_account=identity.emails["web"],
        sizing=cfg.web,
        min_instances=cfg.web_min_instances,
        max_instances=cfg.web_max_instances,
        concurrency=cfg.web_container_concurrency,
        depends_on=[*run_apis, jobs.migrate],
        release=cfg.release,
        previous_revision=cfg.delivery.previous_revision,
        traffic_percent=cfg.delivery.web_traffic,
        behind_load_balancer=bool(cfg.edge.domain),
    ),
)

edge = (
    Edge(
        name,
        EdgeArgs(
            **common,
            region=cfg.region,
            prefix=name,
            config=cfg.edge,
            service_name=web_service,
            candidate_tag=web.tag,
            depends_on=[*apis.needs("compute", *(("dns",) if cfg.edge.dns_zone else ())), web.service],
        ),
    )
    if cfg.edge.domain
    else None
)
public_url = edge.url if edge else web.url

worker = Worker(
    name,
    WorkerArgs(
        **common,
        region=cfg.region,
        prefix=name,
        production=cfg.production,
        workload=workload,
        service_account=identity.emails["worker"],
        sizing=cfg.worker,
        instances=cfg.worker_instances,
        depends_on=[*run_apis, jobs.migrate],
    ),
)

scheduler = Scheduler(
    name,
    SchedulerArgs(
        **common,
        region=cfg.region,
        prefix=name,
        schedules={
            "cleanup-old-tasks": Schedule(job_name=jobs.names["cleanup-old-tasks"], cron=cfg.cleanup_schedule),
            "prune-sessions": Schedule(job_name=jobs.names["prune-sessions"], cron=cfg.prune_sessions_schedule),
        },
        time_zone=cfg.time_zone,
        invoker_email=identity.emails["scheduler"],
        invoker_member=identity.members["scheduler"],
        depends_on=apis.needs("scheduler"),
    ),
)

monitoring = Monitoring(
    name,
    MonitoringArgs(
        **common,
        region=cfg.region,
        prefix=name,
        config=cfg.observability,
        public_host=pulumi.Output.from_input(public_url).apply(lambda url: url.removeprefix("https://")),
        web_service=web_service,
        jobs=jobs.names,
        sql_database_id=database.connection_name.apply(lambda c: ":".join(c.split(":")[::2])),
        sql_tier=cfg.db_tier,
        redis_instance_id=pulumi.Output.concat(
            "projects/", cfg.project, "/locations/", cfg.region, "/instances/", cache.instance.name
        ),
        depends_on=apis.needs("monitoring", "logging"),
    ),
)

if cfg.observability.billing_account:
    Budget(
        name,
        BudgetArgs(
            project=cfg.project,
            prefix=name,
            billing_account=cfg.observability.billing_account,
            monthly_usd=cfg.observability.budget_monthly_usd,
            channels=monitoring.channel_ids,
            depends_on=apis.needs("billingbudgets"),
        ),
    )

pulumi.export("web_url", public_url)
pulumi.export("candidate_url", edge.candidate_url if edge else web.tag_url)
pulumi.export("web_revision", web.revision)
pulumi.export("web_traffic", web.traffic)
pulumi.export("previous_revision", cfg.delivery.previous_revision)
pulumi.export("dns_records", edge.dns_records if edge else [])
pulumi.export("image", image.ref)
pulumi.export("release", cfg.release)
pulumi.export("region", cfg.region)
pulumi.export("project", cfg.project)
pulumi.export("jobs", jobs.names)
pulumi.export("worker_pool", worker.name)
pulumi.export("sql_connection_name", database.connection_name)
pulumi.export("bucket", storage.bucket_name)
