"""Each stack's program runs once per test session, each in its own process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.graph import Graph
from stacks import deployed


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
