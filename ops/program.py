"""Run the Pulumi program for one stack under mocks, once, in a process of its own, and say what it registered.

ops.graph forks that process from a server (multiprocessing's forkserver) that has imported this module, and
with it the provider SDKs, but run nothing: each run starts from a process in which no program has run, so no
cached module can make a second stack register nothing, and none pays the SDKs' imports (~3 s of CPU) again.
"""

# ruff: noqa: E402 - the collector is switched off before the provider SDKs are imported.
from __future__ import annotations

import gc

# A one-shot process that allocates tens of thousands of long-lived classes while importing the provider SDKs
# and frees nothing: cyclic collection only slows it down (by about a third here).
gc.disable()

import importlib
import json
import os
import re
import runpy
import sys
import tempfile
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.settings import get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from ops import reads
from ops.mocks import Mocks, RecordingMonitor

ROOT = Path(__file__).resolve().parent.parent
#: The provider SDKs the program imports; pulumi_gcp's subpackages are found below, as the components name them.
PROVIDERS = ("pulumi_docker", "pulumi_random", "pulumiverse_time")


def import_provider_sdks() -> None:
    """Import what the program will: pulumi_gcp loads each subpackage lazily, on first use, so name them.

    Only speed depends on this list: a subpackage left out is imported by the run that needs it.
    """
    sources = [ROOT / "__main__.py", *sorted((ROOT / "components").glob("*.py"))]
    # `gcp.sql.DatabaseInstance(...)`, or `gcp.monitoring` kept in a name; not a call such as `gcp.get_project()`.
    used = sorted({m for path in sources for m in re.findall(r"\bgcp\.([a-z0-9_]+)\b(?!\s*\()", path.read_text())})
    for name in [*PROVIDERS, *(f"pulumi_gcp.{m}" for m in used)]:
        # Reading an attribute (other than __dict__, __name__ and the like) runs a lazily imported module.
        getattr(importlib.import_module(name), "__all__", None)


import_provider_sdks()


def _stack_outputs() -> dict[str, object]:
    """The exports, with secret ones wrapped as {"secret": value} so a test can tell."""
    exported: dict[str, object] = {}
    for key, value in get_root_resource().outputs.items():  # type: ignore[union-attr]
        output = pulumi.Output.from_input(value)
        resolved = _sync_await(output.future())
        exported[key] = {"secret": resolved} if _sync_await(output.is_secret()) else resolved
    return exported


def execute(stack: str, config: dict[str, str], secret_keys: list[str]) -> dict[str, Any]:
    """{"resources": [...], "outputs": {...}}, or {"error": "..."} where the program stopped."""
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="alle", stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config, secret_keys)
    os.chdir(ROOT)
    sys.path[:] = reads.program_path(sys.path)

    def run_main() -> None:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    try:
        _sync_await(run_pulumi_func(run_main))
    except Exception as error:  # noqa: BLE001 - the message is the test's evidence
        return {"error": f"{type(error).__name__}: {error}"}
    return {"resources": monitor.recorded, "outputs": _stack_outputs()}


def serve(stack: str, config: dict[str, str], secret_keys: list[str], result: Connection) -> None:
    """The forked process's whole life: run once and send the JSON (with what the server and the run read of the
    repository, as "inputs": ops/reads.py), or what it printed if it crashed."""
    with tempfile.TemporaryFile("w+") as printed:
        # What the program or the SDKs print stays here, not in the output of whoever started the server.
        for fd in (1, 2):
            os.dup2(printed.fileno(), fd)
        try:
            sent = json.dumps({**execute(stack, config, secret_keys), "inputs": reads.recorded()})
        except BaseException:  # noqa: BLE001 - anything else is a crash; its traceback goes back as the error
            sys.stdout.flush()
            sys.stderr.flush()
            traceback.print_exc(file=printed)
            printed.seek(0)
            sent = json.dumps({"crash": printed.read()})
        result.send(sent)
