"""What a stack declares, for reviewers: the resource tree and the settings that matter, or two stacks' diff.

Everything comes from running the program under mocks (ops.graph): no credentials, CLI or network.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ops import cost
from ops.graph import Graph, Resource, program, stack_config

Settings = dict[str, str]


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _text(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"secret"}:
        return "(secret)"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _container(r: Resource) -> dict[str, Any]:
    template = r.inputs.get("template", {})
    if "template" in template:
        template = template["template"]
    containers = template.get("containers") or [{}]
    return dict(containers[0])


def _workload(r: Resource) -> Settings:
    """Image, command, sizing, each plain env value, and each secret as secret-id:version."""
    c = _container(r)
    template = r.inputs.get("template", {})
    settings = {
        "image": c.get("image"),
        "args": c.get("args"),
        "cpu": _get(c, "resources", "limits", "cpu"),
        "memory": _get(c, "resources", "limits", "memory"),
        "service account": template.get("serviceAccount") or _get(template, "template", "serviceAccount"),
    }
    for e in c.get("envs", []):
        ref = _get(e, "valueSource", "secretKeyRef")
        if ref:
            settings[f"secret {e['name']}"] = f"{ref['secret']}:{ref['version']}"
        else:
            settings[f"env {e['name']}"] = e.get("value")
    return {k: _text(v) for k, v in settings.items() if v not in (None, [], "")}


def _service(r: Resource) -> Settings:
    scaling = _get(r.inputs, "template", "scaling") or {}
    return {
        **_workload(r),
        "instances": f"{_text(scaling.get('minInstanceCount', 0))}–{_text(scaling.get('maxInstanceCount'))}",
        "concurrency": _text(_get(r.inputs, "template", "maxInstanceRequestConcurrency")),
        "ingress": _text(r.inputs.get("ingress")),
        "invoker check": "off (public)" if r.inputs.get("invokerIamDisabled") else "on (IAM)",
        "run.app url disabled": _text(r.inputs.get("defaultUriDisabled", False)),
        "revision": _text(_get(r.inputs, "template", "revision")),
        "traffic": ", ".join(
            f"{t['revision']} {_text(t['percent'])}% (tag {t['tag']})" for t in r.inputs.get("traffics", [])
        ),
        "deletion protection": _text(r.inputs.get("deletionProtection")),
    }


def _armor(r: Resource) -> Settings:
    """One line per rule: priority, action, what it matches, and whether it only previews."""
    rules = {}
    for rule in r.inputs.get("rules", []):
        match = _get(rule, "match", "expr", "expression") or _text(_get(rule, "match", "config", "srcIpRanges"))
        limit = _get(rule, "rateLimitOptions", "rateLimitThreshold")
        detail = f" {_text(limit['count'])}/{_text(limit['intervalSec'])}s per IP" if limit else ""
        preview = " (preview)" if rule.get("preview") else ""
        rules[f"rule {_text(rule['priority'])}"] = f"{rule['action']}{detail}{preview}: {match}"
    return rules


def _alert(r: Resource) -> Settings:
    conditions = [c["displayName"] for c in r.inputs.get("conditions", [])]
    return {
        "alert": _text(r.inputs.get("displayName")),
        "conditions": ", ".join(conditions),
        "channels": _text(len(r.inputs.get("notificationChannels") or [])),
    }


def _pool(r: Resource) -> Settings:
    return {**_workload(r), "instances": _text(_get(r.inputs, "scaling", "manualInstanceCount"))}


def _job(r: Resource) -> Settings:
    # The token's random suffix is not a setting; a reviewer needs to know only that the job runs on deploy.
    token = r.inputs.get("runExecutionToken")
    wait = f"yes, waits up to {r.timeouts.get('update', '20m')}"
    runs = {"runs when image or release changes": wait} if token else {}
    return {**_workload(r), **runs}


def _sql(r: Resource) -> Settings:
    s = r.inputs.get("settings", {})
    return {
        "version": _text(r.inputs.get("databaseVersion")),
        "tier": f"{s.get('tier')} ({s.get('edition')})",
        "availability": _text(s.get("availabilityType")),
        "disk": f"{_text(s.get('diskSize'))} GB",
        "public ip": _text(_get(s, "ipConfiguration", "ipv4Enabled")),
        "ssl": _text(_get(s, "ipConfiguration", "sslMode")),
        "backups kept": _text(_get(s, "backupConfiguration", "backupRetentionSettings", "retainedBackups")),
        "pitr": _text(_get(s, "backupConfiguration", "pointInTimeRecoveryEnabled")),
        "deletion protection": f"provider {_text(r.inputs.get('deletionProtection'))}, "
        f"api {_text(s.get('deletionProtectionEnabled'))}, pulumi {_text(r.protect)}",
    }


def _redis(r: Resource) -> Settings:
    keys = ("tier", "memorySizeGb", "redisVersion", "connectMode", "authEnabled", "transitEncryptionMode")
    return {k: _text(r.inputs.get(k)) for k in keys} | {"protect": _text(r.protect)}


def _bucket(r: Resource) -> Settings:
    keys = ("name", "location", "publicAccessPrevention", "uniformBucketLevelAccess", "forceDestroy")
    versioning = _text(_get(r.inputs, "versioning", "enabled"))
    return {k: _text(r.inputs.get(k)) for k in keys} | {"versioning": versioning, "protect": _text(r.protect)}


def _grant(r: Resource) -> Settings:
    target = next(
        (_text(r.inputs[k]) for k in ("secretId", "bucket", "repository", "name", "project") if k in r.inputs), ""
    )
    return {"grant": f"{r.inputs['role']} → {_text(r.inputs['member'])} on {target}"}


def _pick(*keys: str) -> Callable[[Resource], Settings]:
    return lambda r: {k: _text(r.inputs[k]) for k in keys if k in r.inputs}


DESCRIBE: dict[str, Callable[[Resource], Settings]] = {
    "gcp:cloudrunv2/service:Service": _service,
    "gcp:cloudrunv2/workerPool:WorkerPool": _pool,
    "gcp:cloudrunv2/job:Job": _job,
    "gcp:sql/databaseInstance:DatabaseInstance": _sql,
    "gcp:redis/instance:Instance": _redis,
    "gcp:storage/bucket:Bucket": _bucket,
    "gcp:projects/service:Service": _pick("service"),
    "gcp:compute/subnetwork:Subnetwork": _pick("ipCidrRange", "region"),
    "gcp:compute/globalAddress:GlobalAddress": _pick("purpose", "prefixLength"),
    "gcp:servicenetworking/connection:Connection": _pick("deletionPolicy"),
    "gcp:serviceaccount/account:Account": _pick("accountId"),
    "gcp:secretmanager/secret:Secret": _pick("secretId"),
    "gcp:secretmanager/secretVersion:SecretVersion": _pick("secretData"),
    "gcp:sql/user:User": _pick("name", "deletionPolicy"),
    "gcp:sql/database:Database": _pick("name"),
    "docker:index/image:Image": lambda r: {
        "build": _text(r.inputs.get("imageName")),
        "platform": _text(_get(r.inputs, "build", "platform")),
    },
    "gcp:compute/securityPolicy:SecurityPolicy": _armor,
    "gcp:compute/managedSslCertificate:ManagedSslCertificate": lambda r: {
        "domains": _text(_get(r.inputs, "managed", "domains"))
    },
    "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup": lambda r: {
        "cloud run": f"{_get(r.inputs, 'cloudRun', 'service')} {_text(_get(r.inputs, 'cloudRun', 'tag') or '')}".strip()
    },
    "gcp:compute/globalForwardingRule:GlobalForwardingRule": _pick("portRange", "loadBalancingScheme"),
    "gcp:compute/uRLMap:URLMap": lambda r: {
        "redirect to https": _text(_get(r.inputs, "defaultUrlRedirect", "httpsRedirect") or False),
        "hosts": _text([h for rule in r.inputs.get("hostRules", []) for h in rule["hosts"]]),
    },
    "gcp:dns/recordSet:RecordSet": _pick("name", "type", "rrdatas"),
    "gcp:monitoring/alertPolicy:AlertPolicy": _alert,
    "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig": lambda r: {
        "check": f"https://{_get(r.inputs, 'monitoredResource', 'labels', 'host')}{_get(r.inputs, 'httpCheck', 'path')}"
    },
    "gcp:monitoring/notificationChannel:NotificationChannel": lambda r: {
        "email": _text(_get(r.inputs, "labels", "email_address"))
    },
    "gcp:logging/metric:Metric": _pick("name", "filter"),
    "gcp:billing/budget:Budget": lambda r: {
        "budget": f"{_get(r.inputs, 'amount', 'specifiedAmount', 'units')} "
        f"{_get(r.inputs, 'amount', 'specifiedAmount', 'currencyCode')} a month"
    },
    "gcp:cloudscheduler/job:Job": lambda r: {
        "schedule": _text(r.inputs.get("schedule")),
        "calls": _text(_get(r.inputs, "httpTarget", "uri")),
    },
}


def describe(resource: Resource) -> Settings:
    if "role" in resource.inputs and "member" in resource.inputs:
        return _grant(resource)
    describe_type = DESCRIBE.get(resource.type)
    return describe_type(resource) if describe_type else {}


@dataclass
class Node:
    type: str
    name: str
    settings: Settings
    children: list[Node] = field(default_factory=list)


def tree(graph: Graph) -> list[Node]:
    """Components, each with its resources."""
    nodes = {r.urn: Node(r.type, r.name, describe(r)) for r in graph.resources}
    roots: list[Node] = []
    # Registration order depends on when each resource's inputs resolve; sort so two runs print alike.
    for r in sorted(graph.resources, key=lambda r: (r.type, r.name)):
        parent = nodes.get(r.parent)
        (parent.children if parent else roots).append(nodes[r.urn])
    return roots


def render(graph: Graph, markdown: bool = False) -> str:
    custom = sum(1 for r in graph.resources if r.custom)
    lines = [f"{'### ' if markdown else ''}Stack {graph.stack}: {len(graph.resources)} resources ({custom} cloud)", ""]

    def walk(node: Node, depth: int) -> None:
        indent = "  " * depth
        head = f"**{node.name}** `{node.type}`" if markdown else f"{node.name}  [{node.type}]"
        lines.append(f"{indent}{'- ' if markdown else ''}{head}")
        for key, value in node.settings.items():
            lines.append(f"{indent}  {'- ' if markdown else ''}{key}: {value}")
        for child in node.children:
            walk(child, depth + 1)

    for root in tree(graph):
        walk(root, 0)
    lines += ["", "Outputs:"] + [f"{'- ' if markdown else '  '}{k}: {_text(v)}" for k, v in graph.outputs.items()]
    return "\n".join(lines) + "\n\n" + cost.render(graph, markdown=markdown)


def _normalised(graph: Graph) -> dict[tuple[str, str], Settings]:
    """Settings by (type, name), with the stack's own name written as <stack> so like matches like."""
    token = f"alle-{graph.stack}"

    def norm(text: str) -> str:
        return text.replace(token, "alle-<stack>")

    return {(r.type, norm(r.name)): {k: norm(v) for k, v in describe(r).items()} for r in graph.resources}


@dataclass(frozen=True)
class Change:
    resource: str
    setting: str
    left: str
    right: str


def diff(left: Graph, right: Graph) -> list[Change]:
    a, b = _normalised(left), _normalised(right)
    changes: list[Change] = []
    for key in sorted(a.keys() | b.keys()):
        label = f"{key[1]} [{key[0]}]"
        if key not in b:
            changes.append(Change(label, "(resource)", "present", "absent"))
        elif key not in a:
            changes.append(Change(label, "(resource)", "absent", "present"))
        else:
            for setting in sorted(a[key].keys() | b[key].keys()):
                va, vb = a[key].get(setting, "—"), b[key].get(setting, "—")
                if va != vb:
                    changes.append(Change(label, setting, va, vb))
    return changes


def render_diff(left: Graph, right: Graph, markdown: bool = False) -> str:
    changes = diff(left, right)
    if markdown:
        lines = [
            f"### {left.stack} → {right.stack}: {len(changes)} differences",
            "",
            f"| resource | setting | {left.stack} | {right.stack} |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {c.resource} | {c.setting} | {c.left} | {c.right} |" for c in changes]
    else:
        lines = [f"{left.stack} → {right.stack}: {len(changes)} differences"]
        previous = None
        for c in changes:
            if c.resource != previous:
                lines.append(f"  {c.resource}")
                previous = c.resource
            lines.append(f"    {c.setting}: {c.left}  →  {c.right}")
    return "\n".join(lines) + "\n\n" + cost.render_diff(left, right, markdown=markdown)


#: Shown for a promoted stack that pins no digest yet: `alle-ops promote` supplies the real one at deploy time.
UNPINNED_DIGEST = "sha256:" + "0" * 64


def review_config(stack: str) -> dict[str, str]:
    """The stack's config, with a placeholder digest where production (which never builds, it is promoted) pins
    none yet, so a reviewer still sees everything else it declares."""
    config = stack_config(stack)
    if stack == "production" and not config.get("alle:image"):
        location = config.get("alle:registryLocation") or config["gcp:region"]
        registry = config.get("alle:registryProject") or config["gcp:project"]
        repository = config.get("alle:registryRepository", "alle")
        config["alle:image"] = f"{location}-docker.pkg.dev/{registry}/{repository}/alle@{UNPINNED_DIGEST}"
    return config


def load(*stacks: str, changes: dict[str, str] | None = None) -> list[Graph]:
    """Run the program for each stack, in parallel processes; `changes` (config keys) apply to the last one."""
    configs = [review_config(s) for s in stacks]
    configs[-1] |= changes or {}
    with ThreadPoolExecutor(max_workers=len(stacks)) as pool:
        return list(pool.map(program, stacks, configs))
