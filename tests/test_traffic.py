"""Progressive delivery: every release's web revision has a stable name and a tag URL before it takes traffic;
the traffic shape of each step (begin at 0%, canary, full, rollback); the alle-ops commands that move it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import pytest

from components import delivery
from ops import cli, traffic
from ops.graph import Graph, Resource
from stacks import deployed

SERVICE = "gcp:cloudrunv2/service:Service"
NEG = "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup"
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SHA = "3f5e2a9c0d1b4e6f8a7c9b0d2e4f6a8c1b3d5e7f"
OLD_SHA = "2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c"
RELEASE_IDS = [SHA, "v1.2.3", "2024-01-15T10:30:00Z", "dev"]
SERVICES = ["alle-staging-web", "alle-production-web"]


TEMPLATE = hashlib.sha256(b"a template").hexdigest()
#: The revision a previous deploy created (its web_revision output).
OLD_REVISION = f"alle-staging-web-{OLD_SHA[:32]}-0a1b2c"


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("release", RELEASE_IDS)
def test_revision_name_is_a_dns_label_starting_with_the_service_name(service: str, release: str) -> None:
    name = delivery.revision_name(service, release, TEMPLATE)
    assert name.startswith(f"{service}-")
    assert len(name) <= 63
    assert DNS_LABEL.match(name), name
    assert name.endswith(f"-{TEMPLATE[:6]}")


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("release", RELEASE_IDS)
def test_tag_is_a_dns_label_that_fits_with_the_service_name(service: str, release: str) -> None:
    tag = delivery.tag(service, release)
    assert DNS_LABEL.match(tag), tag
    assert len(tag) >= 3
    assert len(tag) + len(service) <= 46


def test_a_revision_name_reads_as_service_release_and_template() -> None:
    assert delivery.revision_name("alle-staging-web", "dev", TEMPLATE) == f"alle-staging-web-dev-{TEMPLATE[:6]}"
    assert delivery.tag("alle-production-web", SHA).startswith(f"r-{SHA[:12]}")


def test_release_ids_that_read_alike_get_different_names() -> None:
    service = "alle-staging-web"
    for a, b in (("v1.2.3", "v1-2-3"), ("2024-01-15T10:30:00Z", "2024-01-15t10-30-00z"), (SHA, SHA[:-1] + "0")):
        assert delivery.revision_name(service, a, TEMPLATE) != delivery.revision_name(service, b, TEMPLATE)
        assert delivery.tag(service, a) != delivery.tag(service, b)


def test_names_are_stable_for_a_release() -> None:
    assert delivery.tag("alle-staging-web", "v1.2.3") == "r-v1-2-3-" + hashlib.sha256(b"v1.2.3").hexdigest()[:8]


# The traffic shape of each step ---------------------------------------------------------------------------------


def shape(graph: Graph) -> list[tuple[str, int, str]]:
    service = graph.one(SERVICE)
    return [(t["revision"], t["percent"], t["tag"]) for t in service.inputs["traffics"]]


def tag(release: str) -> str:
    return delivery.tag("alle-staging-web", release)


def step(percent: str, previous: str = OLD_REVISION, **more: str) -> Graph:
    config = {"alle:release": SHA, "alle:previousRevision": previous, "alle:webTraffic": percent}
    return deployed("staging", config | more)


@pytest.fixture(scope="module")
def begun() -> Graph:
    return step("0")


@pytest.fixture(scope="module")
def full() -> Graph:
    return step("100")


def test_a_release_begins_with_its_own_revision_and_url_but_no_traffic(begun: Graph) -> None:
    current = begun.outputs["web_revision"]
    assert current.startswith(f"alle-staging-web-{SHA[:20]}")
    assert shape(begun) == [(current, 0, tag(SHA)), (OLD_REVISION, 100, "previous")]
    assert begun.one(SERVICE).inputs["template"]["revision"] == current
    candidate = next(n for n in begun.of_type(NEG) if n.inputs["cloudRun"].get("tag"))
    assert candidate.inputs["cloudRun"] == {"service": "alle-staging-web", "tag": tag(SHA)}
    assert begun.outputs["candidate_url"] == "https://candidate.staging.alle.app"
    assert begun.outputs["web_traffic"] == {current: 0, OLD_REVISION: 100}


def test_a_canary_splits_traffic_between_the_release_and_the_previous_revision(begun: Graph) -> None:
    current = begun.outputs["web_revision"]
    assert shape(step("10")) == [(current, 10, tag(SHA)), (OLD_REVISION, 90, "previous")]


def test_full_promotion_gives_the_release_all_traffic_and_keeps_the_previous_one_tagged(full: Graph) -> None:
    assert shape(full) == [(full.outputs["web_revision"], 100, tag(SHA)), (OLD_REVISION, 0, "previous")]


def test_a_first_release_takes_all_traffic_whatever_the_share() -> None:
    graph = step("0", previous="")
    assert shape(graph) == [(graph.outputs["web_revision"], 100, tag(SHA))]


def test_a_config_change_under_the_same_release_names_a_new_revision(full: Graph) -> None:
    """Cloud Run refuses a known revision name with a different template (409), so the name follows the template."""
    resized = step("100", **{"alle:webMaxInstances": "4"})
    assert resized.outputs["web_revision"] != full.outputs["web_revision"]
    assert resized.outputs["web_revision"].rsplit("-", 1)[0] == full.outputs["web_revision"].rsplit("-", 1)[0]
    assert shape(resized)[0][2] == shape(full)[0][2] == tag(SHA)


def _inputs(graph: Graph) -> dict[str, dict[str, Any]]:
    """Inputs by URN, the migrate job's execution token included: it changes only with the image or release."""
    return {r.urn: r.inputs for r in graph.resources}


def test_rolling_traffic_back_changes_only_the_web_services_traffic(full: Graph, begun: Graph) -> None:
    rolled_back = begun  # a rollback is the same config as a begun release: this release at 0%
    before, after = _inputs(full), _inputs(rolled_back)
    assert before.keys() == after.keys()
    changed = [urn for urn in before if before[urn] != after[urn]]
    [service] = [r for r in full.resources if r.type == SERVICE]
    assert changed == [service.urn]
    keys = {
        k
        for k in before[service.urn].keys() | after[service.urn].keys()
        if before[service.urn].get(k) != after[service.urn].get(k)
    }
    assert keys == {"traffics"}
    assert shape(rolled_back) == [(full.outputs["web_revision"], 0, tag(SHA)), (OLD_REVISION, 100, "previous")]


def test_without_a_domain_the_candidate_url_is_the_releases_tag_url(no_domain: Graph) -> None:
    assert no_domain.outputs["candidate_url"] == f"https://{tag('dev')}---alle-staging-web-abc123-ew.a.run.app"


# alle-ops --------------------------------------------------------------------------------------------------------


class FakeStacks:
    def __init__(self, outputs: dict[str, Any]) -> None:
        self.stack_outputs = {"staging": outputs}
        self.config: dict[str, str] = {}
        self.ups: list[tuple[str, list[str]]] = []

    def outputs(self, stack: str) -> dict[str, Any]:
        return self.stack_outputs[stack]

    def set_config(self, stack: str, key: str, value: str) -> None:
        self.config[key] = value

    def up(self, stack: str, targets: list[str], replace: Sequence[str] = ()) -> None:
        assert not replace, "traffic moves replace nothing"
        self.ups.append((stack, targets))


def rev(release: str) -> str:
    return f"alle-staging-web-{release}-0a1b2c"


def outputs(release: str, previous: str, percent: int) -> dict[str, Any]:
    """A stack's outputs while `release` has `percent` and the revision of `previous` (a release id) the rest."""
    shares = {rev(release): percent, **({rev(previous): 100 - percent} if previous else {})}
    return {
        "release": release,
        "previous_revision": rev(previous) if previous else "",
        "web_revision": rev(release),
        "web_traffic": shares,
    }


def test_release_begin_keeps_the_serving_release_on_all_traffic() -> None:
    stacks = FakeStacks(outputs(OLD_SHA, "", 100))
    assert cli.main(["release", "begin", "--stack", "staging", "--release", SHA], stacks) == 0
    assert stacks.config == {"alle:release": SHA, "alle:previousRevision": rev(OLD_SHA), "alle:webTraffic": "0"}
    assert stacks.ups == []


def test_release_begin_after_a_rollback_keeps_the_release_that_serves() -> None:
    stacks = FakeStacks(outputs("bad1", OLD_SHA, 0))
    assert cli.main(["release", "begin", "--stack", "staging", "--release", SHA], stacks) == 0
    assert stacks.config["alle:previousRevision"] == rev(OLD_SHA)


def test_release_begin_on_a_stack_without_named_revisions_has_no_previous() -> None:
    stacks = FakeStacks({"release": OLD_SHA, "web_url": "https://x"})
    assert cli.main(["release", "begin", "--stack", "staging", "--release", SHA], stacks) == 0
    assert stacks.config["alle:previousRevision"] == ""


@pytest.mark.parametrize("percent", [0, 10, 100])
def test_beginning_the_release_the_stack_runs_again_keeps_its_traffic_so_a_deploy_can_be_retried(
    percent: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A retried deploy starts from a fresh checkout, whose stack file holds no traffic keys: written from what the
    stack runs, they keep `pulumi up` from giving all traffic (Pulumi.yaml's default) to an untested release."""
    stacks = FakeStacks(outputs(SHA, OLD_SHA, percent))
    assert cli.main(["release", "begin", "--stack", "staging", "--release", SHA], stacks) == 0
    assert stacks.config == {
        "alle:release": SHA,
        "alle:previousRevision": rev(OLD_SHA),
        "alle:webTraffic": str(percent),
    }
    assert f"at {percent}% of web traffic, {rev(OLD_SHA)} keeps {100 - percent}%." in capsys.readouterr().out


def test_release_begin_refuses_half_way_through_a_canary(capsys: pytest.CaptureFixture[str]) -> None:
    stacks = FakeStacks(outputs(OLD_SHA, "older", 10))
    assert cli.main(["release", "begin", "--stack", "staging", "--release", SHA], stacks) == 1
    assert stacks.config == {}
    assert "half-way through a canary" in capsys.readouterr().err


def test_traffic_shift_sets_the_share_and_updates_only_the_web_service(staging: Graph) -> None:
    stacks = FakeStacks(outputs(SHA, OLD_SHA, 0))
    assert cli.main(["traffic", "shift", "--stack", "staging", "--to", "10"], stacks) == 0
    assert stacks.config == {"alle:release": SHA, "alle:previousRevision": rev(OLD_SHA), "alle:webTraffic": "10"}
    assert stacks.ups == [("staging", [staging.one(SERVICE).urn])]


def test_traffic_rollback_sends_everything_to_the_previous_revision(capsys: pytest.CaptureFixture[str]) -> None:
    stacks = FakeStacks(outputs(SHA, OLD_SHA, 100))
    assert cli.main(["traffic", "rollback", "--stack", "staging"], stacks) == 0
    assert stacks.config["alle:webTraffic"] == "0"
    assert capsys.readouterr().out == f"staging: release {SHA} 0%, {rev(OLD_SHA)} 100%\n"


def test_traffic_rollback_without_a_previous_revision_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    stacks = FakeStacks(outputs(SHA, "", 100))
    assert cli.main(["traffic", "rollback", "--stack", "staging"], stacks) == 1
    assert stacks.ups == []
    assert "no previous revision to roll traffic back to" in capsys.readouterr().err


@pytest.mark.parametrize("percent", ["-1", "101"])
def test_traffic_shift_refuses_a_share_outside_0_to_100(percent: str) -> None:
    stacks = FakeStacks(outputs(SHA, OLD_SHA, 0))
    assert cli.main(["traffic", "shift", "--stack", "staging", "--to", percent], stacks) == 1
    assert stacks.config == {}


def test_smoke_candidate_calls_the_releases_own_url(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[tuple[str, str | None]] = []

    def fake_smoke(url: str, release: str | None = None, wait_seconds: float = 120) -> list[str]:
        called.append((url, release))
        return ["checked"]

    monkeypatch.setattr("ops.smoke.smoke", fake_smoke)
    stacks = FakeStacks({**outputs(SHA, OLD_SHA, 0), "candidate_url": "https://candidate.staging.alle.app"})
    assert cli.main(["smoke", "--stack", "staging", "--candidate"], stacks) == 0
    assert called == [("https://candidate.staging.alle.app", SHA)]


def test_the_web_urn_alle_ops_targets_is_the_programs(stack: Graph) -> None:
    service: Resource = stack.one(SERVICE)
    assert traffic.web_urn(stack.stack) == service.urn
