"""Offline view of a stack: config loaded the way the Pulumi CLI does, the program run under mocks.

No credentials, CLI or network: what comes back is every resource the program registers, with its inputs
(camelCase, as the engine receives them), parent, dependencies and `protect`, plus the stack's outputs.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

from ops.errors import OpsError

ROOT = Path(__file__).resolve().parent.parent
#: libyaml's parser, where PyYAML was built with it: the pure-Python one takes about 50 ms for Pulumi.yaml, and
#: the tests read it a few hundred times.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Stands in for values that only the stack's secrets provider can decrypt.
SECRET_PLACEHOLDER = "[secret]"  # noqa: S105 - a placeholder, not a credential


class ProgramError(OpsError):
    """The program stopped (for example on a bad config value); the message is the program's own."""


def read_yaml(path: Path) -> Any:
    """A YAML file's content; a syntax error is one sentence naming the file and the line, not a traceback."""
    try:
        return yaml.load(path.read_text(), Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = error.problem or error.context or "invalid YAML"
        raise ProgramError(f"{path.name} {where}: {problem}; fix the YAML there.") from None
    except yaml.YAMLError as error:
        raise ProgramError(f"{path.name}: {error}; fix the YAML there.") from None


def stack_config(stack: str, overrides: dict[str, str] | None = None, root: Path = ROOT) -> dict[str, str]:
    """Project defaults from Pulumi.yaml, then the stack file, then overrides; values as strings like the CLI."""
    project = read_yaml(root / "Pulumi.yaml")
    config: dict[str, str] = {}
    for key, spec in project["config"].items():
        if "default" in spec:
            config[f"alle:{key}"] = _text(spec["default"])
        elif spec.get("secret"):
            config[f"alle:{key}"] = SECRET_PLACEHOLDER
    path = root / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml"))
        raise ProgramError(f"no stack file {path.name}; the stacks here are {', '.join(known)}")
    stack_file = read_yaml(path) or {}
    if not isinstance(stack_file, dict) or not isinstance(stack_file.get("config") or {}, dict):
        raise ProgramError(f"{path.name}: expected a mapping with a `config:` mapping of key: value lines.")
    for key, value in (stack_file.get("config") or {}).items():
        config[key] = SECRET_PLACEHOLDER if isinstance(value, dict) and "secure" in value else _text(value)
    return config | (overrides or {})


def _text(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value)  # structured config reaches the program as JSON, as under the CLI
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Resource:
    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    protect: bool
    dependencies: list[str]
    inputs: dict[str, Any]
    retain_on_delete: bool = False
    ignore_changes: list[str] = field(default_factory=list)
    #: Former names under which the engine finds this resource's state.
    aliases: list[str] = field(default_factory=list)
    #: Custom timeouts (create/update/delete), empty where the provider's defaults apply.
    timeouts: dict[str, str] = field(default_factory=dict)


class Graph:
    """What one stack registered."""

    def __init__(self, stack: str, data: dict[str, Any]) -> None:
        self.stack = stack
        self.resources = [Resource(**r) for r in data["resources"]]
        self.outputs: dict[str, Any] = data["outputs"]
        self.by_urn = {r.urn: r for r in self.resources}

    def of_type(self, typ: str) -> list[Resource]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str | None = None) -> Resource:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"{self.stack}: expected one {typ} {name or ''}, found {[r.name for r in found]}"
        return found[0]

    def custom(self) -> Iterator[Resource]:
        return (r for r in self.resources if r.custom)

    def depends_on(self, resource: Resource, other: Resource) -> bool:
        """Direct or transitive: would the engine create `other` before `resource`?"""
        seen: set[str] = set()
        todo = list(resource.dependencies)
        while todo:
            urn = todo.pop()
            if urn == other.urn:
                return True
            if urn in seen or urn not in self.by_urn:
                continue
            seen.add(urn)
            todo.extend(self.by_urn[urn].dependencies)
        return False


def secret_keys(root: Path = ROOT) -> list[str]:
    """The keys Pulumi.yaml declares secret: the program must see them as secrets, as under the CLI."""
    project = read_yaml(root / "Pulumi.yaml")
    return [f"alle:{key}" for key, spec in project["config"].items() if spec.get("secret")]


#: Each run is forked from a server that has imported ops.program and the provider SDKs (ops/program_server.py).
_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["ops.program_server"])
#: How long one run may take; it takes a few seconds.
RUN_TIMEOUT = 120


def _serve(stack: str, config: dict[str, str], keys: list[str], result: Connection) -> None:
    """Runs in the forked process, where ops.program is already imported."""
    from ops.program import serve

    serve(stack, config, keys, result)


def run(stack: str, config: dict[str, str]) -> dict[str, Any]:
    """Run the program once for `stack` with `config`, in a process of its own; what it registered, or its error."""
    received, sent = _FORKSERVER.Pipe(duplex=False)
    process = _FORKSERVER.Process(target=_serve, args=(stack, config, secret_keys(), sent), daemon=True)
    process.start()
    sent.close()
    try:
        if not received.poll(RUN_TIMEOUT):
            raise ProgramError(f"the program ran for more than {RUN_TIMEOUT} s for {stack}; it was stopped.")
        data = dict(json.loads(received.recv()))
    except EOFError:
        process.join()
        raise ProgramError(f"the program for {stack} exited ({process.exitcode}) without a result.") from None
    finally:
        received.close()
        process.kill()
        process.join()
    if "crash" in data:
        raise ProgramError(f"the program crashed for {stack}:\n{data['crash']}")
    return data


def program(stack: str, overrides: dict[str, str] | None = None, root: Path = ROOT) -> Graph:
    data = run(stack, stack_config(stack, overrides, root))
    if "error" in data:
        raise ProgramError(data["error"])
    return Graph(stack, data)
