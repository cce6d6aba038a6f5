"""Progressive delivery, operator side: a release starts at 0% with its own URL, then takes traffic, or gives it
back to the previous release. Only config changes: no image is built and no migration runs, and the traffic
moves with `pulumi up --target` on the web service alone, so nothing else in the stack is touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from ops.errors import OpsError
from ops.pulumi_cli import Stacks


class TrafficError(OpsError):
    pass


def web_urn(stack: str) -> str:
    """The web service's URN (project alle, component alle:services:Web named after the stack)."""
    return f"urn:pulumi:{stack}::alle::alle:services:Web$gcp:cloudrunv2/service:Service::alle-{stack}-service"


@dataclass(frozen=True)
class Serving:
    release: str | None
    revision: str | None
    previous: str | None
    percent: int | None


def serving(outputs: dict[str, object]) -> Serving:
    """What the stack's outputs say about its web traffic; all None before named revisions were deployed."""
    revision, shares = outputs.get("web_revision"), outputs.get("web_traffic")
    if not isinstance(revision, str) or not isinstance(shares, dict) or revision not in shares:
        return Serving(None, None, None, None)
    release = outputs.get("release")
    previous = outputs.get("previous_revision") or None
    return Serving(
        release if isinstance(release, str) else None,
        revision,
        str(previous) if previous else None,
        int(shares[revision]),
    )


def begin(stacks: Stacks, stack: str, release: str) -> Serving:
    """Point the stack at `release` with 0% of web traffic, the revision serving now keeping 100%.

    Returns the release's share and the revision that keeps the rest (None on a first deploy: nothing else can
    serve, so the new release takes it all at once). Beginning the release the stack already runs keeps its share
    and previous revision, so a deploy can be retried. Refuses while another release's canary is half-way: finish
    it or roll it back first.
    """
    now = serving(stacks.outputs(stack))
    if now.release == release:
        # Written all the same: a retried deploy runs in a fresh checkout, whose stack file holds none of it, and
        # `pulumi up` would otherwise take Pulumi.yaml's defaults: all traffic to a release not yet smoke-tested.
        _point(stacks, stack, release, now.previous, now.percent if now.percent is not None else 100)
        return now
    if now.percent not in (None, 0, 100):
        raise TrafficError(
            f"{stack} is half-way through a canary ({now.release} at {now.percent}%); "
            f"finish it (`alle-ops traffic shift --stack {stack} --to 100`) or roll it back first"
        )
    keeps = now.previous if now.percent == 0 else now.revision
    _point(stacks, stack, release, keeps, 0)
    return Serving(release, None, keeps, 0 if keeps else 100)


def _point(stacks: Stacks, stack: str, release: str, previous: str | None, percent: int) -> None:
    stacks.set_config(stack, "alle:release", release)
    stacks.set_config(stack, "alle:previousRevision", previous or "")
    stacks.set_config(stack, "alle:webTraffic", str(percent))


def shift(stacks: Stacks, stack: str, percent: int) -> Serving:
    """Give this release `percent` of web traffic and the previous revision the rest, now."""
    if not 0 <= percent <= 100:
        raise TrafficError(f"--to is {percent}; give a percentage from 0 to 100")
    now = serving(stacks.outputs(stack))
    if now.release is None:
        raise TrafficError(f"{stack} exports no web_revision/web_traffic; deploy it with `pulumi up` first")
    if now.previous is None and percent != 100:
        raise TrafficError(f"{stack} has no previous revision to give {100 - percent}% of traffic to")
    # Release and previous revision come from the outputs, not the local stack file, so this works from any checkout.
    stacks.set_config(stack, "alle:release", now.release)
    stacks.set_config(stack, "alle:previousRevision", now.previous or "")
    stacks.set_config(stack, "alle:webTraffic", str(percent))
    stacks.up(stack, [web_urn(stack)])
    return Serving(now.release, now.revision, now.previous, percent)


def rollback(stacks: Stacks, stack: str) -> Serving:
    """All web traffic back to the previous revision, which still exists: no rebuild, no migration."""
    now = serving(stacks.outputs(stack))
    if now.previous is None:
        raise TrafficError(f"{stack} has no previous revision to roll traffic back to")
    return shift(stacks, stack, 0)
