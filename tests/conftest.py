"""Each stack's program runs once per test session, each in its own process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Graph, program


@pytest.fixture(scope="session")
def staging() -> Graph:
    return program("staging")


@pytest.fixture(scope="session")
def production() -> Graph:
    return program("production")


@pytest.fixture(scope="session", params=["staging", "production"])
def stack(request: pytest.FixtureRequest, staging: Graph, production: Graph) -> Graph:
    return staging if request.param == "staging" else production
