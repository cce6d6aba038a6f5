"""Run the Pulumi program for one stack under mocks, in a fresh process, and print what it registered as JSON.

Usage: python -m ops.program STACK < config.json   (config: {"namespace:key": "value", ...})
A fresh process per stack means no cached module can make a second stack register nothing.
"""

from __future__ import annotations

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
    config = json.load(sys.stdin)
    secret_keys = [k for k in config if k == "alle:mailApiKey"]
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
    sys.exit(main())
