"""The few Pulumi CLI calls the operator commands make; the only place `ops` shells out to `pulumi`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any, Protocol

from ops.errors import OpsError


class Stacks(Protocol):
    def outputs(self, stack: str) -> dict[str, Any]: ...

    def set_config(self, stack: str, key: str, value: str) -> None: ...

    def up(self, stack: str, targets: list[str], replace: Sequence[str] = ()) -> None: ...


class PulumiCli:
    def __init__(self, cwd: str = ".") -> None:
        self.cwd = cwd

    def _run(self, *args: str) -> str:
        try:
            result = subprocess.run(["pulumi", *args], cwd=self.cwd, capture_output=True, text=True, check=False)
        except FileNotFoundError as error:
            raise OpsError("the Pulumi CLI is not on PATH; install it (see README) and `pulumi login`") from error
        if result.returncode != 0:
            raise OpsError(f"`pulumi {' '.join(args)}` failed: {result.stderr.strip()}")
        return result.stdout

    def outputs(self, stack: str) -> dict[str, Any]:
        return dict(json.loads(self._run("stack", "output", "--json", "--stack", stack)))

    def set_config(self, stack: str, key: str, value: str) -> None:
        self._run("config", "set", "--stack", stack, key, value)

    def up(self, stack: str, targets: list[str], replace: Sequence[str] = ()) -> None:
        """`pulumi up`, limited to `targets` when given (the rest is neither updated nor replaced), replacing
        the resources in `replace` whether or not their inputs changed."""
        self._run(
            "up",
            "--stack",
            stack,
            "--yes",
            "--skip-preview",
            *(f"--target={t}" for t in targets),
            *(f"--replace={urn}" for urn in replace),
        )
