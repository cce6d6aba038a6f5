"""Cloud SQL for PostgreSQL 16 on a private IP only, with the app's database and user."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

DATABASE = "alle"
USER = "alle"


@dataclass
class DatabaseArgs:
    project: str
    region: str
    prefix: str
    tier: str
    edition: str
    high_availability: bool
    disk_size_gb: int
    backup_retention_count: int
    pitr_days: int
    production: bool
    network_id: pulumi.Input[str]
    labels: dict[str, str]
    depends_on: list[pulumi.Resource]


class Database(pulumi.ComponentResource):
    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:database:Database", name, None, opts)
        self.instance = gcp.sql.DatabaseInstance(
            f"{name}-pg",
            gcp.sql.DatabaseInstanceArgs(
                project=args.project,
                name=f"{args.prefix}-pg",
                region=args.region,
                database_version="POSTGRES_16",
                # Provider-side guard; the API-level one is settings.deletion_protection_enabled below.
                deletion_protection=args.production,
                settings=gcp.sql.DatabaseInstanceSettingsArgs(
                    tier=args.tier,
                    edition=args.edition,
                    availability_type="REGIONAL" if args.high_availability else "ZONAL",
                    disk_type="PD_SSD",
                    disk_size=args.disk_size_gb,  # the initial size only, see ignore_changes
                    disk_autoresize=True,
                    deletion_protection_enabled=args.production,
                    # Backups outlive the instance, so a mistaken delete is recoverable.
                    retain_backups_on_delete=True,
                    user_labels=args.labels,
                    ip_configuration=gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs(
                        ipv4_enabled=False,
                        private_network=args.network_id,
                        ssl_mode="ENCRYPTED_ONLY",
                    ),
                    backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                        enabled=True,
                        start_time="02:00",
                        point_in_time_recovery_enabled=True,
                        transaction_log_retention_days=args.pitr_days,
                        backup_retention_settings=gcp.sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                            retained_backups=args.backup_retention_count, retention_unit="COUNT"
                        ),
                    ),
                    # Sunday 03:00 UTC for an hour; Memorystore's is on Saturday (components/cache.py), and the
                    # nightly jobs run after this hour (Pulumi.yaml cleanupSchedule).
                    maintenance_window=gcp.sql.DatabaseInstanceSettingsMaintenanceWindowArgs(
                        day=7, hour=3, update_track="stable"
                    ),
                    insights_config=gcp.sql.DatabaseInstanceSettingsInsightsConfigArgs(
                        query_insights_enabled=True,
                        query_string_length=1024,
                        record_application_tags=True,
                        record_client_address=False,
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=args.depends_on,
                protect=args.production,
                # Under disk_autoresize GCP grows the disk and owns its size. A declared disk_size "will override
                # the resizing from disk_autoresize", and a running instance's size "cannot be reduced"; the SDK
                # says to ignore changes to it (pulumi-gcp 10.2, sql.DatabaseInstanceSettings.disk_size).
                ignore_changes=["settings.diskSize"],
            ),
        )
        self.database = gcp.sql.Database(
            f"{name}-db",
            gcp.sql.DatabaseArgs(project=args.project, instance=self.instance.name, name=DATABASE),
            opts=pulumi.ResourceOptions(parent=self, protect=args.production),
        )
        self.password = random.RandomPassword(
            f"{name}-password",
            random.RandomPasswordArgs(length=40, special=False),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.user = gcp.sql.User(
            f"{name}-user",
            gcp.sql.UserArgs(
                project=args.project,
                instance=self.instance.name,
                name=USER,
                password=self.password.result,
                # The migrate job runs as this user, so it owns the app's tables, and PostgreSQL refuses to drop a role
                # that owns objects ("A role cannot be removed if it is still referenced in any database",
                # https://www.postgresql.org/docs/16/sql-droprole.html). ABANDON leaves the user to its instance:
                # "useful for Postgres, where users cannot be deleted from the API if they have been granted SQL
                # roles" (pulumi-gcp 10.2, sql.User.deletion_policy). In both stacks: staging's destroy then deletes
                # the instance and the user with it; production's instance is protected. The database itself keeps
                # the default DELETE: Cloud Run's workloads, its only clients, read DATABASE_URL from a secret that
                # depends on it, so `pulumi destroy` deletes them before it drops the database.
                deletion_policy="ABANDON",
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        #: The app's DATABASE_URL; it only ever lives in Secret Manager and, as a secret, in Pulumi state.
        self.url: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.format(
                "postgresql://{0}:{1}@{2}:5432/{3}?sslmode=require",
                self.user.name,
                self.password.result,
                self.instance.private_ip_address,
                self.database.name,
            )
        )
        self.connection_name = self.instance.connection_name
        self.register_outputs({"connection_name": self.connection_name, "private_ip": self.instance.private_ip_address})
