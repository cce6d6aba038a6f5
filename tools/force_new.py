"""Derive, for every resource type the Pulumi program declares, which inputs replace the resource when they change.

Pulumi's bridged providers replace a resource when an input the Terraform provider marks `ForceNew` (SDKv2) or
`RequiresReplace` (plugin framework) changes. This script reads those marks from the providers' Go source, at the
versions the pinned Pulumi SDKs were built from, maps Terraform's field paths to the Pulumi input names by walking
the installed Python SDKs' input types, and writes tests/force_new.json for the lifecycle model (tests/gcp_model.py).
A field whose path cannot be mapped stops the script: the table is either complete or not written.

Usage (git directories of the providers, e.g. from a `git clone --bare`):
    venv/bin/python tools/force_new.py GOOGLE_BETA_GIT RANDOM_GIT TIME_GIT > tests/force_new.json
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

#: pulumi-gcp 10.2.0 is built from terraform-provider-google-beta 7.45 (it has 7.45's new resources, e.g.
#: firestore.ChangeStream); pulumi-random 4.21 from terraform-provider-random 3.8; pulumiverse-time 0.1 from
#: terraform-provider-time 0.x, whose time_sleep schema has not changed since 0.9.
GOOGLE_BETA = ("hashicorp/terraform-provider-google-beta", "v7.45.0")
RANDOM = ("hashicorp/terraform-provider-random", "v3.8.1")
TIME = ("hashicorp/terraform-provider-time", "v0.14.0")

SERVICES = "google-beta/services"
IAM_BASE = ("google-beta/tpgiamresource/resource_iam_member.go", "IamMemberBaseSchema")
#: Packages whose helpers (e.g. tpgresource.DeletionPolicySchemaEntry) return schema pieces.
SHARED = ("google-beta/tpgresource", "google-beta/tpgiamresource")


@dataclass(frozen=True)
class Sdk2:
    """A google-beta resource: its Go file and the function returning its *schema.Resource."""

    path: str
    function: str


@dataclass(frozen=True)
class IamMember:
    """A google_*_iam_member: tpgiamresource's member schema plus the parent's identifier schema (a var)."""

    path: str
    variable: str


@dataclass(frozen=True)
class Framework:
    """A plugin-framework resource: its Go file (attributes are found in its Schema method)."""

    path: str


#: Pulumi type token → where its Terraform schema is. Every custom resource type the program can register.
SOURCES: dict[str, Sdk2 | IamMember | Framework] = {
    "gcp:billing/budget:Budget": Sdk2("billingbudgets/resource_billing_budget.go", "ResourceBillingBudgetsBudget"),
    "gcp:cloudrunv2/job:Job": Sdk2("cloudrunv2/resource_cloud_run_v2_job.go", "ResourceCloudRunV2Job"),
    "gcp:cloudrunv2/jobIamMember:JobIamMember": IamMember(
        "cloudrunv2/iam_cloud_run_v2_job.go", "CloudRunV2JobIamSchema"
    ),
    "gcp:cloudrunv2/service:Service": Sdk2("cloudrunv2/resource_cloud_run_v2_service.go", "ResourceCloudRunV2Service"),
    "gcp:cloudrunv2/workerPool:WorkerPool": Sdk2(
        "cloudrunv2/resource_cloud_run_v2_worker_pool.go", "ResourceCloudRunV2WorkerPool"
    ),
    "gcp:cloudscheduler/job:Job": Sdk2("cloudscheduler/resource_cloud_scheduler_job.go", "ResourceCloudSchedulerJob"),
    "gcp:compute/backendService:BackendService": Sdk2(
        "compute/resource_compute_backend_service.go", "ResourceComputeBackendService"
    ),
    "gcp:compute/globalAddress:GlobalAddress": Sdk2(
        "compute/resource_compute_global_address.go", "ResourceComputeGlobalAddress"
    ),
    "gcp:compute/globalForwardingRule:GlobalForwardingRule": Sdk2(
        "compute/resource_compute_global_forwarding_rule.go", "ResourceComputeGlobalForwardingRule"
    ),
    "gcp:compute/managedSslCertificate:ManagedSslCertificate": Sdk2(
        "compute/resource_compute_managed_ssl_certificate.go", "ResourceComputeManagedSslCertificate"
    ),
    "gcp:compute/network:Network": Sdk2("compute/resource_compute_network.go", "ResourceComputeNetwork"),
    "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup": Sdk2(
        "compute/resource_compute_region_network_endpoint_group.go", "ResourceComputeRegionNetworkEndpointGroup"
    ),
    "gcp:compute/securityPolicy:SecurityPolicy": Sdk2(
        "compute/resource_compute_security_policy.go", "ResourceComputeSecurityPolicy"
    ),
    "gcp:compute/sSLPolicy:SSLPolicy": Sdk2("compute/resource_compute_ssl_policy.go", "ResourceComputeSslPolicy"),
    "gcp:compute/subnetwork:Subnetwork": Sdk2("compute/resource_compute_subnetwork.go", "ResourceComputeSubnetwork"),
    "gcp:compute/targetHttpProxy:TargetHttpProxy": Sdk2(
        "compute/resource_compute_target_http_proxy.go", "ResourceComputeTargetHttpProxy"
    ),
    "gcp:compute/targetHttpsProxy:TargetHttpsProxy": Sdk2(
        "compute/resource_compute_target_https_proxy.go", "ResourceComputeTargetHttpsProxy"
    ),
    "gcp:compute/uRLMap:URLMap": Sdk2("compute/resource_compute_url_map.go", "ResourceComputeUrlMap"),
    "gcp:dns/recordSet:RecordSet": Sdk2("dns/resource_dns_record_set.go", "ResourceDnsRecordSet"),
    "gcp:logging/metric:Metric": Sdk2("logging/resource_logging_metric.go", "ResourceLoggingMetric"),
    "gcp:monitoring/alertPolicy:AlertPolicy": Sdk2(
        "monitoring/resource_monitoring_alert_policy.go", "ResourceMonitoringAlertPolicy"
    ),
    "gcp:monitoring/dashboard:Dashboard": Sdk2(
        "monitoring/resource_monitoring_dashboard.go", "ResourceMonitoringDashboard"
    ),
    "gcp:monitoring/notificationChannel:NotificationChannel": Sdk2(
        "monitoring/resource_monitoring_notification_channel.go", "ResourceMonitoringNotificationChannel"
    ),
    "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig": Sdk2(
        "monitoring/resource_monitoring_uptime_check_config.go", "ResourceMonitoringUptimeCheckConfig"
    ),
    "gcp:projects/iAMMember:IAMMember": IamMember("resourcemanager/iam_project.go", "IamProjectSchema"),
    "gcp:projects/service:Service": Sdk2(
        "resourcemanager/resource_google_project_service.go", "ResourceGoogleProjectService"
    ),
    "gcp:projects/serviceIdentity:ServiceIdentity": Sdk2(
        "resourcemanager/resource_project_service_identity.go", "ResourceProjectServiceIdentity"
    ),
    "gcp:redis/instance:Instance": Sdk2("redis/resource_redis_instance.go", "ResourceRedisInstance"),
    "gcp:secretmanager/secret:Secret": Sdk2(
        "secretmanager/resource_secret_manager_secret.go", "ResourceSecretManagerSecret"
    ),
    "gcp:secretmanager/secretIamMember:SecretIamMember": IamMember(
        "secretmanager/iam_secret_manager_secret.go", "SecretManagerSecretIamSchema"
    ),
    "gcp:secretmanager/secretVersion:SecretVersion": Sdk2(
        "secretmanager/resource_secret_manager_secret_version.go", "ResourceSecretManagerSecretVersion"
    ),
    "gcp:serviceaccount/account:Account": Sdk2(
        "resourcemanager/resource_google_service_account.go", "ResourceGoogleServiceAccount"
    ),
    "gcp:servicenetworking/connection:Connection": Sdk2(
        "servicenetworking/resource_service_networking_connection.go", "ResourceServiceNetworkingConnection"
    ),
    "gcp:sql/database:Database": Sdk2("sql/resource_sql_database.go", "ResourceSQLDatabase"),
    "gcp:sql/databaseInstance:DatabaseInstance": Sdk2(
        "sql/resource_sql_database_instance.go", "ResourceSqlDatabaseInstance"
    ),
    "gcp:sql/user:User": Sdk2("sql/resource_sql_user.go", "ResourceSqlUser"),
    "gcp:storage/bucket:Bucket": Sdk2("storage/resource_storage_bucket.go", "ResourceStorageBucket"),
    "gcp:storage/bucketIAMMember:BucketIAMMember": IamMember("storage/iam_storage_bucket.go", "StorageBucketIamSchema"),
    "random:index/randomId:RandomId": Framework("internal/provider/resource_id.go"),
    "random:index/randomPassword:RandomPassword": Framework("internal/provider/resource_password.go"),
    "time:index/sleep:Sleep": Framework("internal/provider/resource_time_sleep.go"),
}

#: Not a bridged provider: pulumi-docker's Image is native. Its Diff (pulumi/pulumi-docker, provider/image.go)
#: reports every change as an update (no `Replaces`): Update builds and pushes again, and Delete does nothing.
HANDWRITTEN = {
    "docker:index/image:Image": {
        "source": "pulumi/pulumi-docker provider/image.go (Diff: updates only, no Replaces; Delete is a no-op)",
        "force_new": [],
        "conditional": [],
    }
}

TOKEN = re.compile(
    r"""(?P<comment>//[^\n]*|/\*.*?\*/)
      |(?P<string>"(?:\\.|[^"\\])*"|`[^`]*`)
      |(?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
      |(?P<number>[0-9]+)
      |(?P<space>\s+)
      |(?P<punct>.)""",
    re.S | re.X,
)
OPEN, CLOSE = "{([", "})]"


class DerivationError(Exception):
    """The source does not have the shape this script reads: the table would be incomplete."""


def tokens(source: str) -> list[str]:
    return [m.group() for m in TOKEN.finditer(source) if m.lastgroup not in ("comment", "space")]


def closing(toks: list[str], i: int) -> int:
    """Index of the bracket that closes toks[i]."""
    depth = 0
    for k in range(i, len(toks)):
        if toks[k] in OPEN:
            depth += 1
        elif toks[k] in CLOSE:
            depth -= 1
            if depth == 0:
                return k
    raise DerivationError("unbalanced brackets")


def find(toks: list[str], seq: list[str], start: int = 0, end: int | None = None) -> int:
    end = len(toks) if end is None else end
    for k in range(start, end - len(seq) + 1):
        if toks[k : k + len(seq)] == seq:
            return k
    return -1


def top_level(toks: list[str], lbrace: int) -> list[int]:
    """Indices of the tokens directly inside the brackets opened at lbrace."""
    out, depth = [], 0
    for k in range(lbrace + 1, closing(toks, lbrace)):
        if depth == 0:
            out.append(k)
        if toks[k] in OPEN:
            depth += 1
        elif toks[k] in CLOSE:
            depth -= 1
    return out


@dataclass
class Package:
    """The Go files of one package, tokenized, to resolve helper functions and vars by name."""

    files: dict[str, list[str]] = field(default_factory=dict)

    def body_of(self, name: str, returns: str) -> tuple[list[str], int]:
        """The `{` of the composite literal `name` stands for: `func name(...) *returns { return &returns{`, or
        `var name = &returns{` / `var name = map[string]*schema.Schema{`."""
        for toks in self.files.values():
            for k in range(len(toks) - 2):
                if toks[k] == "func" and toks[k + 1] == name and toks[k + 2] == "(":
                    ret = find(toks, ["return", "&", returns, "{"], k)
                    if ret >= 0:
                        return toks, ret + 3
                if toks[k] == "var" and toks[k + 1] == name:  # `var name = …{` or `var name *T = …{`
                    return toks, toks.index("{", k)
        raise DerivationError(f"cannot find {name} returning {returns}")


@dataclass
class Field:
    force_new: bool
    children: dict[str, Field]


def schema_map(pkg: Package, toks: list[str], lbrace: int) -> dict[str, Field]:
    """`map[string]*schema.Schema{ "name": {...}, "other": helper(), ... }`."""
    fields: dict[str, Field] = {}
    inner = top_level(toks, lbrace)
    for k in inner:
        if not toks[k].startswith('"') or toks[k + 1] != ":":
            continue
        key = toks[k].strip('"')
        value = k + 2
        if toks[value] == "{":
            fields[key] = schema_body(pkg, toks, value)
        elif toks[value : value + 3] == ["&", "schema.Schema", "{"]:
            fields[key] = schema_body(pkg, toks, value + 2)
        elif re.fullmatch(r"[A-Za-z_][\w.]*", toks[value]) and toks[value + 1] == "(":
            name = toks[value].split(".")[-1]
            other, body = pkg.body_of(name, "schema.Schema")
            fields[key] = schema_body(pkg, other, body)
        else:
            raise DerivationError(f"field {key}: unreadable value {' '.join(toks[value : value + 5])}")
    return fields


def schema_body(pkg: Package, toks: list[str], lbrace: int) -> Field:
    """One `schema.Schema{...}`: its ForceNew flag and, for a nested block, its fields."""
    force_new, children = False, {}
    for k in top_level(toks, lbrace):
        if toks[k] == "ForceNew" and toks[k + 1] == ":":
            force_new = toks[k + 2] == "true"
        if toks[k] == "Elem" and toks[k + 1] == ":":
            value = k + 2
            if toks[value : value + 3] == ["&", "schema.Resource", "{"]:
                children = resource_fields(pkg, toks, value + 2)
            elif toks[value : value + 3] == ["&", "schema.Schema", "{"]:
                pass  # a list of primitives
            elif re.fullmatch(r"[A-Za-z_][\w.]*", toks[value]):
                other, body = pkg.body_of(toks[value].split(".")[-1], "schema.Resource")
                children = resource_fields(pkg, other, body)
    return Field(force_new, children)


def resource_fields(pkg: Package, toks: list[str], lbrace: int) -> dict[str, Field]:
    """The `Schema:` map of a `schema.Resource{...}` literal."""
    for k in top_level(toks, lbrace):
        if toks[k] == "Schema" and toks[k + 1] == ":":
            if toks[k + 2 : k + 8] == ["map", "[", "string", "]", "*", "schema.Schema"]:
                return schema_map(pkg, toks, k + 8)
            name = toks[k + 2].split(".")[-1]  # Schema: someFunc(),
            other, body = pkg.body_of(name, "map")
            return schema_map(pkg, other, body)
    raise DerivationError("a schema.Resource without a Schema")


def force_new_paths(fields: dict[str, Field], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The outermost ForceNew paths: a ForceNew block covers everything inside it."""
    out = []
    for name, f in sorted(fields.items()):
        path = (*prefix, name)
        if f.force_new:
            out.append(path)
        else:
            out.extend(force_new_paths(f.children, path))
    return out


def conditional_paths(toks: list[str]) -> list[str]:
    """Fields a CustomizeDiff may force new on some changes only (`ForceNewIfChange("a.0.b", …)`,
    `diff.ForceNew("a")`): the model cannot evaluate the condition, so they are listed, not applied."""
    out = set()
    for k in range(len(toks) - 2):
        if toks[k].endswith(("ForceNewIfChange", ".ForceNew", "ForceNewIf")) and toks[k + 1] == "(":
            arg = toks[k + 2]
            if arg.startswith('"'):
                out.add(re.sub(r"\.\d+", "", arg.strip('"')))
    return sorted(out)


def git_show(git_dir: str, tag: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", git_dir, "show", f"{tag}:{path}"], capture_output=True, text=True, check=True
    ).stdout


@functools.cache
def _directory(git_dir: str, tag: str, directory: str) -> dict[str, list[str]]:
    listing = subprocess.run(
        ["git", "--git-dir", git_dir, "ls-tree", "--name-only", f"{tag}:{directory}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = [n for n in listing if n.endswith(".go") and not n.endswith("_test.go")]
    return {n: tokens(git_show(git_dir, tag, f"{directory}/{n}")) for n in names}


def package(git_dir: str, tag: str, directory: str) -> Package:
    """The package's files, then the shared helper packages its schemas call into (tpgresource, …)."""
    files = dict(_directory(git_dir, tag, directory))
    if directory.startswith(SERVICES):
        for shared in SHARED:
            files |= {f"{shared}/{n}": t for n, t in _directory(git_dir, tag, shared).items()}
    return Package(files)


def sdk2_fields(git_dir: str, source: Sdk2) -> tuple[dict[str, Field], list[str]]:
    directory, file = source.path.rsplit("/", 1)
    pkg = package(git_dir, GOOGLE_BETA[1], f"{SERVICES}/{directory}")
    toks = pkg.files[file]
    start = find(toks, ["func", source.function, "(", ")", "*", "schema.Resource", "{"])
    if start < 0:
        raise DerivationError(f"{source.function} not in {source.path}")
    literal = find(toks, ["return", "&", "schema.Resource", "{"], start) + 3
    return resource_fields(pkg, toks, literal), conditional_paths(toks)


def iam_fields(git_dir: str, source: IamMember) -> dict[str, Field]:
    pkg = package(git_dir, GOOGLE_BETA[1], f"{SERVICES}/{source.path.rsplit('/', 1)[0]}")
    toks, lbrace = pkg.body_of(source.variable, "map")
    base_dir = IAM_BASE[0].rsplit("/", 1)[0]
    base = package(git_dir, GOOGLE_BETA[1], base_dir)
    base_toks, base_brace = base.body_of(IAM_BASE[1], "map")
    return schema_map(base, base_toks, base_brace) | schema_map(pkg, toks, lbrace)


def framework_fields(git_dir: str, tag: str, source: Framework) -> dict[str, Field]:
    """`Attributes: map[string]schema.Attribute{ "x": schema.StringAttribute{ … RequiresReplace() … } }`, from the
    resource's Schema method or the helper it returns."""
    directory, file = source.path.rsplit("/", 1)
    pkg = package(git_dir, tag, directory)
    candidates = [file, *sorted(n for n in pkg.files if n != file)]
    for name in candidates:
        toks = pkg.files[name]
        at = find(toks, ["Attributes", ":", "map", "[", "string", "]", "schema.Attribute", "{"])
        if at >= 0 and (name == file or _defines_schema_for(pkg.files[file], toks)):
            lbrace = at + 7
            fields = {}
            for k in top_level(toks, lbrace):
                if toks[k].startswith('"') and toks[k + 1] == ":":
                    body = toks.index("{", k)
                    replaces = any("RequiresReplace" in t for t in toks[body : closing(toks, body)])
                    fields[toks[k].strip('"')] = Field(replaces, {})
            return fields
    raise DerivationError(f"no Attributes map for {source.path}")


def _defines_schema_for(resource: list[str], helper: list[str]) -> bool:
    """The resource file's Schema method returns a helper defined in this other file."""
    called = {t for t in resource if re.fullmatch(r"\w+Schema\w*", t)}
    return any(helper[k] == "func" and helper[k + 1] in called for k in range(len(helper) - 1))


def pulumi_args(token: str) -> type:
    provider, rest = token.split(":", 1)
    module, name = rest.split(":")[0].split("/")[0], rest.split(":")[1]
    package_name = {"gcp": "pulumi_gcp", "random": "pulumi_random", "time": "pulumiverse_time"}[provider]
    mod = importlib.import_module(package_name if module == "index" else f"{package_name}.{module}")
    return getattr(mod, f"{name}Args")  # type: ignore[no-any-return]


def _nested_args(cls: type, prop: property) -> type | None:
    annotation = inspect.get_annotations(prop.fget).get("return", "")  # type: ignore[arg-type]
    match = re.search(r"'?(\w+Args)'?", str(annotation))
    if not match:
        return None
    module = sys.modules[cls.__module__]
    inputs = importlib.import_module(module.__name__.rsplit(".", 1)[0] + "._inputs")
    return getattr(inputs, match.group(1), None) or getattr(module, match.group(1), None)


def pulumi_path(token: str, tf_path: tuple[str, ...]) -> str:
    """Terraform's snake_case path → the Pulumi input path the mocks record (camelCase; lists pluralized)."""
    cls: type | None = pulumi_args(token)
    out = []
    for segment in tf_path:
        if cls is None:
            raise DerivationError(f"{token}: {'.'.join(tf_path)} goes below a value that has no fields")
        for python in (segment, f"{segment}s", f"{segment}es", f"{segment[:-1]}ies"):
            prop = inspect.getattr_static(cls, python, None)
            if isinstance(prop, property):
                break
        else:
            raise DerivationError(f"{token}: no Pulumi input for {'.'.join(tf_path)} ({segment} in {cls.__name__})")
        out.append(getattr(prop.fget, "_pulumi_name", python))
        cls = _nested_args(cls, prop)
    return ".".join(out)


def _commit(git_dir: str, tag: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", git_dir, "rev-parse", f"{tag}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _is_output(token: str, path: tuple[str, ...]) -> bool:
    """A Terraform field that the Pulumi resource has only as an output (Computed, e.g. sql.User.iam_email)."""
    args = pulumi_args(token)
    resource = getattr(sys.modules[args.__module__], args.__name__.removesuffix("Args"))
    return len(path) == 1 and isinstance(inspect.getattr_static(resource, path[0], None), property)


def _inputs(token: str, paths: list[tuple[str, ...]], strict: bool) -> tuple[list[str], list[str]]:
    """(Pulumi input paths, Terraform paths that are not inputs). Strict: a path that is neither stops the script."""
    mapped, skipped = [], []
    for path in paths:
        try:
            mapped.append(pulumi_path(token, path))
        except DerivationError:
            if strict and not _is_output(token, path):
                raise
            skipped.append(".".join(path))
    return sorted(set(mapped)), skipped


def derive(google_beta: str, random_git: str, time_git: str) -> dict[str, Any]:
    git = {GOOGLE_BETA[0]: google_beta, RANDOM[0]: random_git, TIME[0]: time_git}
    types: dict[str, Any] = {}
    for token, source in sorted(SOURCES.items()):
        conditional: list[str] = []
        if isinstance(source, Sdk2):
            fields, conditional = sdk2_fields(google_beta, source)
            where = f"{GOOGLE_BETA[0]}@{GOOGLE_BETA[1]}:{SERVICES}/{source.path}"
        elif isinstance(source, IamMember):
            fields = iam_fields(google_beta, source)
            where = f"{GOOGLE_BETA[0]}@{GOOGLE_BETA[1]}:{SERVICES}/{source.path} + {IAM_BASE[0]}"
        else:
            repo, tag = RANDOM if token.startswith("random:") else TIME
            fields = framework_fields(git[repo], tag, source)
            where = f"{repo}@{tag}:{source.path}"
        force_new, outputs = _inputs(token, force_new_paths(fields), strict=True)
        conditions, absent = _inputs(token, [tuple(c.split(".")) for c in conditional], strict=False)
        types[token] = {"source": where, "force_new": force_new, "conditional": conditions}
        if outputs or absent:
            types[token]["not_inputs"] = sorted(outputs + absent)
    sources = {repo: {"tag": tag, "commit": _commit(git[repo], tag)} for repo, tag in (GOOGLE_BETA, RANDOM, TIME)}
    return {"generated_by": "tools/force_new.py", "sources": sources, "types": types | HANDWRITTEN}


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="venv/bin/python tools/force_new.py",
        description="Write the inputs that replace each resource type as JSON (for tests/force_new.json).",
    )
    parser.add_argument(
        "google_beta", metavar="GOOGLE_BETA_GIT", help="a git directory of terraform-provider-google-beta"
    )
    parser.add_argument("random_git", metavar="RANDOM_GIT", help="a git directory of terraform-provider-random")
    parser.add_argument("time_git", metavar="TIME_GIT", help="a git directory of terraform-provider-time")
    args = parser.parse_args()
    table = derive(args.google_beta, args.random_git, args.time_git)
    sys.stdout.write(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
