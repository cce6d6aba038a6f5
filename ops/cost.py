"""An estimated monthly cost per stack, from what the program declares and a checked-in price table.

It is an estimate: list prices of the table's date, fixed capacity only (instances, tiers, disks, rules).
What depends on traffic (requests, CPU while serving, data processed, egress, logs) is not counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ops.graph import Graph, Resource, read_yaml

PRICES = Path(__file__).with_name("prices.yaml")
SECONDS_PER_HOUR = 3600


@cache
def prices() -> dict[str, Any]:
    return dict(read_yaml(PRICES))


@dataclass(frozen=True)
class Item:
    #: What is priced (the same in every stack), and this stack's size of it.
    kind: str
    size: str
    monthly: float

    @property
    def name(self) -> str:
        return f"{self.kind}: {self.size}"


def _gib(memory: str) -> float:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", memory)
    if not match:
        raise ValueError(f"memory {memory!r} is not NMi or NGi")
    return int(match[1]) / (1024 if match[2] == "Mi" else 1)


def _sql(r: Resource, p: dict[str, Any], hours: float) -> Iterator[Item]:
    s = r.inputs["settings"]
    tier, plus = s["tier"], s.get("edition") == "ENTERPRISE_PLUS"
    ha = p["ha_multiplier"] if s.get("availabilityType") == "REGIONAL" else 1
    suffix = " HA" if ha > 1 else ""
    if tier in p["shared_core_hour"]:
        hourly = p["shared_core_hour"][tier]
    else:
        custom = re.fullmatch(r"db-custom-(\d+)-(\d+)", tier)
        perf = re.fullmatch(r"db-perf-optimized-N-(\d+)", tier)
        cpus, gb = (
            (int(custom[1]), int(custom[2]) / 1024) if custom else (int(perf[1]), int(perf[1]) * 8) if perf else (0, 0)
        )
        edition = "enterprise_plus" if plus else "enterprise"
        hourly = cpus * p[f"{edition}_vcpu_hour"] + gb * p[f"{edition}_memory_gb_hour"]
    disk = int(s["diskSize"])
    yield Item("Cloud SQL instance", f"{tier}{suffix}", hourly * ha * hours)
    yield Item("Cloud SQL storage", f"{disk} GB SSD{suffix}", disk * p["ssd_gb_month"] * ha)


def _redis(r: Resource, p: dict[str, Any], hours: float) -> Iterator[Item]:
    tier, size = r.inputs["tier"], int(r.inputs["memorySizeGb"])
    per_gb = next(price for limit, price in sorted(p[tier].items()) if size <= int(limit))
    yield Item("Memorystore", f"{tier} {size} GB", size * per_gb * hours)


def _limits(r: Resource) -> tuple[float, float]:
    containers = r.inputs["template"]["containers"]
    limits = containers[0]["resources"]["limits"]
    return float(limits["cpu"]), _gib(limits["memory"])


def _web(r: Resource, p: dict[str, Any], hours: float) -> Iterator[Item]:
    count = int(r.inputs["template"].get("scaling", {}).get("minInstanceCount", 0))
    if count:
        cpu, gib = _limits(r)
        per_second = cpu * p["idle_vcpu_second"] + gib * p["idle_gib_second"]
        yield Item("Cloud Run web", f"{count} minimum instance(s), idle", count * per_second * SECONDS_PER_HOUR * hours)


def _pool(r: Resource, p: dict[str, Any], hours: float) -> Iterator[Item]:
    count = int(r.inputs.get("scaling", {}).get("manualInstanceCount", 0))
    cpu, gib = _limits(r)
    per_second = cpu * p["instance_vcpu_second"] + gib * p["instance_gib_second"]
    yield Item("Cloud Run worker pool", f"{count} instance(s)", count * per_second * SECONDS_PER_HOUR * hours)


def items(graph: Graph) -> list[Item]:
    """Each priced thing the stack declares, biggest first."""
    p, hours = prices(), float(prices()["hours_per_month"])
    found: list[Item] = []
    for r in graph.custom():
        if r.type == "gcp:sql/databaseInstance:DatabaseInstance":
            found += _sql(r, p["cloud_sql"], hours)
        elif r.type == "gcp:redis/instance:Instance":
            found += _redis(r, p["memorystore"], hours)
        elif r.type == "gcp:cloudrunv2/service:Service":
            found += _web(r, p["cloud_run"], hours)
        elif r.type == "gcp:cloudrunv2/workerPool:WorkerPool":
            found += _pool(r, p["cloud_run"], hours)
    rules = graph.of_type("gcp:compute/globalForwardingRule:GlobalForwardingRule")
    if rules:
        found.append(
            Item(
                "Load balancer",
                f"{len(rules)} forwarding rules",
                len(rules) * p["load_balancing"]["forwarding_rule_hour"] * hours,
            )
        )
    for policy in graph.of_type("gcp:compute/securityPolicy:SecurityPolicy"):
        armor = p["cloud_armor"]
        count = len(policy.inputs.get("rules", []))
        found.append(
            Item("Cloud Armor", f"1 policy, {count} rules", armor["policy_month"] + count * armor["rule_month"])
        )
    versions = graph.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    if versions:
        found.append(
            Item(
                "Secret Manager",
                f"{len(versions)} versions",
                len(versions) * p["secret_manager"]["active_version_month"],
            )
        )
    return sorted(found, key=lambda i: -i.monthly)


def total(graph: Graph) -> float:
    return sum(i.monthly for i in items(graph))


def caveat() -> str:
    p = prices()
    return (
        f"an estimate from list prices of {p['date']} ({p['region']}; ops/prices.yaml): fixed capacity only, "
        "not requests, data processed, egress or logs"
    )


def render(graph: Graph, top: int = 5, markdown: bool = False) -> str:
    found = items(graph)
    head = f"{'#### ' if markdown else ''}Estimated monthly cost: ${total(graph):,.2f} — {caveat()}"
    lines = [head, ""] + [f"{'- ' if markdown else '  '}${i.monthly:,.2f}  {i.name}" for i in found[:top]]
    return "\n".join(lines) + "\n"


def render_diff(left: Graph, right: Graph, markdown: bool = False) -> str:
    """What the right stack adds or saves against the left, item by item."""
    a = {i.kind: i for i in items(left)}
    b = {i.kind: i for i in items(right)}
    delta = total(right) - total(left)
    verb = "adds" if delta >= 0 else "saves"
    lines = [
        f"{'#### ' if markdown else ''}Estimated monthly cost: {left.stack} ${total(left):,.2f} → {right.stack} "
        f"${total(right):,.2f} ({verb} ${abs(delta):,.2f}) — {caveat()}",
        "",
    ]
    for kind in sorted(a.keys() | b.keys()):
        before, after = a.get(kind), b.get(kind)
        change = (after.monthly if after else 0) - (before.monthly if before else 0)
        if round(change, 2):
            sizes = f"{before.size if before else 'none'} → {after.size if after else 'none'}"
            lines.append(f"{'- ' if markdown else '  '}{change:+,.2f}  {kind}: {sizes}")
    return "\n".join(lines) + "\n"
