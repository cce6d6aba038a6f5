"""Each stack's program runs once per test session, shared by the xdist workers, each run in its own process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops import graph
from ops.graph import Graph
from stacks import RunOnce, deployed


@pytest.fixture(scope="session", autouse=True)
def run_once(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunOnce]:
    """Every test that runs the program through ops.graph (directly, via the stacks or alle-ops plan) shares
    runs of the same stack and config, on every xdist worker (about 60 runs become 30), and with later sessions
    while nothing the runs read has changed (`.cache/program-runs`; README "Testing")."""
    session = tmp_path_factory.getbasetemp()
    # An xdist worker's temporary root is a directory of the session's own, made afresh for each session. Asked of
    # the config, not the environment, which a pytest started by a test would inherit.
    worker = hasattr(request.config, "workerinput")
    shared = (session.parent if worker else session) / "program-runs"
    shared.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        runner = RunOnce(graph.run, shared, graph.ROOT / ".cache" / "program-runs")
        patch.setattr(graph, "run", runner)
        yield runner


@pytest.fixture(scope="session")
def staging() -> Graph:
    return deployed("staging")


@pytest.fixture(scope="session")
def production() -> Graph:
    return deployed("production")


@pytest.fixture(scope="session", params=["staging", "production"])
def stack(request: pytest.FixtureRequest, staging: Graph, production: Graph) -> Graph:
    return staging if request.param == "staging" else production


@pytest.fixture(scope="session")
def no_domain() -> Graph:
    """Staging without alle:domain: the shape every stack had before the edge."""
    return deployed("staging", {"alle:domain": ""})
