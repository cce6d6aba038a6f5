"""Run the Pulumi program for one stack under mocks, in a fresh process, and print what it registered as JSON.

Usage: python -m ops.program STACK < input.json   ({"config": {"namespace:key": "value"}, "secret_keys": [...]})
A fresh process per stack means no cached module can make a second stack register nothing.
"""

# ruff: noqa: E402 - the collector is switched off before the provider SDKs are imported.
from __future__ import annotations

import gc

# A one-shot process that allocates tens of thousands of long-lived classes while importing the provider SDKs
# and frees nothing: cyclic collection only slows it down (by about a third here).
gc.disable()

import json
import os
import runpy
import sys
from pathlib import Path

import pulumi
from pulumi.runtime.settings import get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from ops.mocks import Mocks, RecordingMonitor

ROOT = Path(__file__).resolve().parent.parent


def _stack_outputs() -> dict[str, object]:
    """The exports, with secret ones wrapped as {"secret": value} so a test can tell."""
    exported: dict[str, object] = {}
    for key, value in get_root_resource().outputs.items():  # type: ignore[union-attr]
        output = pulumi.Output.from_input(value)
        resolved = _sync_await(output.future())
        exported[key] = {"secret": resolved} if _sync_await(output.is_secret()) else resolved
    return exported


def main() -> int:
    stack = sys.argv[1]
    given = json.load(sys.stdin)
    config, secret_keys = given["config"], given["secret_keys"]
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="alle", stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config, secret_keys)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))

    def run_main() -> None:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    try:
        _sync_await(run_pulumi_func(run_main))
    except Exception as error:  # noqa: BLE001 - the message is the test's evidence
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 1
    print(json.dumps({"resources": monitor.recorded, "outputs": _stack_outputs()}))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Interpreter teardown of the provider SDKs' thousands of classes and gRPC threads takes longer than the
    # whole run; this process has printed its one line and owns nothing that needs an orderly exit.
    os._exit(code)
