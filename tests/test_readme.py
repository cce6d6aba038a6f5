"""Every command the README shows works as written from a fresh clone, so the README cannot drift.

Commands are the lines of its ```bash blocks and the inline `bin/…`, `ops/…` and `venv/bin/…` spans. Each one
runs offline when it can (`plan`, `bootstrap.sh --dry-run`), or its arguments are checked by the very parser
that will read them, or at least its `--help` runs; with nothing on PATH but the system's. Only the few in
NOT_RUN are left out, each with the reason. A new command in the README either passes one of these checks or
goes into NOT_RUN with its reason.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from ops import cli
from ops.graph import ROOT

README = (ROOT / "README.md").read_text()
#: The system's PATH (Debian's, sbin included as for root, who installs podman and debootstrap), without venv/bin or
#: anything a developer's shell adds.
BARE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

NOT_RUN = {
    "pulumi": "needs the Pulumi CLI, credentials and a state backend; the program itself is tested under mocks",
    "gcloud": "needs Google Cloud credentials; ops/bootstrap.sh --dry-run prints the same commands and is run",
    "bin/run-local": "serves until stopped: its arguments go through the parser of app/dev/run.py, which it execs "
    "and app/tests/test_run_local.py runs",
    "rm": "deletes local data (.local/); nothing to check offline",
    "bin/lock": "resolves the locks against PyPI; what it writes is the committed lock files",
    "bin/setup": "installs from PyPI into venv/; bin/test's first phase runs it",
}


def readme_commands() -> list[str]:
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE):
        commands += [shlex.join(shlex.split(line, comments=True)) for line in block.splitlines()]
    for span in re.findall(r"`((?:[A-Z_]+=\S+ )*(?:bin|ops|tools|venv/bin)/[^`]+)`", README):
        argv = shlex.split(re.sub(r"\s*\[[^]]*\]", "", span))  # [--markdown]: an optional part
        if len(argv) > 1:  # a lone `bin/alle-ops` in prose names the file; the next test checks it exists
            commands.append(shlex.join(argv))
    return list(dict.fromkeys(c for c in commands if c))


def test_every_script_the_readme_names_exists() -> None:
    named = set(re.findall(r"`((?:bin|ops|bench|app|tools|venv/bin)/[\w./-]+)`", README)) - {"venv/bin/python"}
    missing = [n for n in sorted(named) if not n.startswith("venv/") and not (ROOT / n).exists()]
    assert missing == []


def run(argv: list[str], timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env={**BARE_ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_readme_shows_the_commands_a_newcomer_starts_with() -> None:
    commands = readme_commands()
    for expected in ("bin/run-local", "bin/test", "venv/bin/python bench/startup.py", "rm -rf .local"):
        assert expected in commands


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_works_as_written(command: str, tmp_path: Path) -> None:
    argv = shlex.split(command)
    # The shell's part of a command line: variables set for it (PORT=8081 …) and where its output goes (> file).
    env = {}
    while re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
        name, value = argv.pop(0).split("=", 1)
        env[name] = value
    if ">" in argv:
        argv = argv[: argv.index(">")]
    program = argv[0]
    if program == "bin/run-local":
        result = run(["venv/bin/python", "app/dev/run.py", *argv[1:], "--help"], env=env)
        assert result.returncode == 0, f"`{command}`: its arguments are refused:\n{result.stdout}{result.stderr}"
        return
    if program in NOT_RUN:
        assert program in ("pulumi", "gcloud", "rm") or (ROOT / program).is_file(), f"{program} does not exist"
        return
    assert (ROOT / program).is_file(), f"the README shows {program}, which is not in the repository"
    if program == "bin/alle-ops":
        _alle_ops(argv[1:])
    elif program == "bin/test":
        _bin_test(argv[1:], tmp_path, env)
    elif program == "venv/bin/pytest":
        # Run, not only collected: the README's is a quick offline selection, and must pass with nothing on PATH.
        result = run([*argv, "-q", "-p", "no:cacheprovider"])
        assert result.returncode == 0, result.stdout + result.stderr
    elif program == "ops/bootstrap.sh":
        result = run([program, "--dry-run", *argv[1:]])
        assert result.returncode == 0, result.stderr
        assert "Set these variables on the GitHub environment" in result.stdout
    else:
        result = run([*argv, "--help"])
        assert result.returncode == 0, f"`{command} --help` failed:\n{result.stdout}{result.stderr}"


def _bin_test(args: list[str], tmp_path: Path, env: dict[str, str]) -> None:
    """bin/test passes its arguments to both pytest trees, through bin/lib/selected: pytest must accept them in
    each, and they must select tests in one tree at least. Without arguments, bin/test is what runs this test."""
    if not args:
        return
    for tree in ("tests", "app/tests"):
        marker = tmp_path / tree.replace("/", "-")
        collect = ["venv/bin/pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args, tree]
        result = run(["bin/lib/selected", str(marker), *collect], env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    assert len(list(tmp_path.iterdir())) < 2, f"bin/test {shlex.join(args)} selects no test in either tree"


def _alle_ops(args: list[str]) -> None:
    """`plan` runs offline; the other verbs need the cloud, so their arguments go through alle-ops' own parser."""
    if args and args[0] == "plan":
        result = run(["bin/alle-ops", *args])
        assert result.returncode == 0, result.stderr
        assert "alle-<stack>-" in result.stdout or "alle-staging-" in result.stdout, result.stdout[:200]
        return
    own = args[: args.index("--")] if "--" in args else args
    try:
        cli.parser().parse_args(own)
    except SystemExit as exit_:
        pytest.fail(f"alle-ops refuses the README's arguments {own} (exit {exit_.code})")


def test_the_readmes_state_backend_is_the_one_bootstrap_creates() -> None:
    [backend] = [shlex.split(c)[2] for c in readme_commands() if c.startswith("pulumi login ")]
    provider = re.search(r'--secrets-provider="?([^"\s]+)', README)
    assert provider
    result = run(
        [
            *("ops/bootstrap.sh", "--dry-run", "--registry-project", "alle-registry"),
            *("alle-staging", "europe-west1", "OWNER/REPO", "staging"),
        ]
    )
    assert f"PULUMI_BACKEND_URL={backend}" in result.stdout
    assert f"PULUMI_SECRETS_PROVIDER={provider.group(1)}" in result.stdout


def test_local_urls_in_the_readme_use_run_locals_default_port() -> None:
    run_py = (ROOT / "app" / "dev" / "run.py").read_text()
    default = re.search(r'os\.environ\.get\("PORT", "(\d+)"\)', run_py)
    assert default, "app/dev/run.py no longer reads PORT the way this test expects"
    ports = set(re.findall(r"http://127\.0\.0\.1:(\d+)", README))
    assert ports == {default.group(1)}
