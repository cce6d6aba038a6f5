"""alle-ops is friendly: every option explains itself, and every wait says what it waits for and gives up in time."""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import Iterator

import pytest

from ops import cli, jobs, smoke
from ops.errors import OpsError


def _subcommands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in cli.parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


@pytest.mark.parametrize(("verb", "sub"), list(_subcommands()))
def test_every_argument_and_option_has_help_text(verb: str, sub: argparse.ArgumentParser) -> None:
    silent = [a.dest for a in sub._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert silent == [], f"alle-ops {verb}: no help for {silent}"


def test_job_help_shows_the_passthrough_after_the_separator(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["job", "--help"])
    out = capsys.readouterr().out
    assert "[-- ARG ...]" in out
    assert "job run generate-report --stack production -- dead-jobs list" in out


class FakeClock:
    """Time that moves one second per look and never sleeps, so waits are tested without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_smoke_says_what_it_waits_for_and_gives_up_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke, "time", FakeClock())
    monkeypatch.setattr(smoke, "_call", lambda url, timeout: (503, {"database": "down"}))
    said: list[str] = []
    with pytest.raises(smoke.SmokeError) as raised:
        smoke.wait_ready("https://alle.example", 20, poll_seconds=5, say=said.append)
    assert said[0] == "waiting up to 20 s for https://alle.example/readyz to answer 200, ready"
    progress = said[1:]
    assert len(progress) > 1
    assert all(
        re.fullmatch(r"  https://alle\.example/readyz: 503 \(\{'database': 'down'\}\); \d+ s of 20 s", p)
        for p in progress
    )
    message = str(raised.value)
    assert message.startswith("https://alle.example/readyz answered 503: {'database': 'down'} after ")
    assert message.endswith("allow longer: --timeout") and "\n" not in message


def test_smoke_timeout_flag_bounds_the_wait_and_the_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    assert cli.main(["smoke", "--url", closed, "--timeout", "0"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"waiting up to 0 s for {closed}/readyz to answer 200, ready"
    assert len([line for line in err if line.startswith("alle-ops: ")]) == 1
    assert err[-1].startswith(f"alle-ops: {closed}/readyz did not answer (")


class Operation:
    def __init__(self, polls_until_done: int | None) -> None:
        self.polls = 0
        self.until = polls_until_done

    def done(self) -> bool:
        self.polls += 1
        return self.until is not None and self.polls > self.until


EXECUTION = "projects/p/locations/europe-west1/jobs/alle-staging-migrate/executions/alle-staging-migrate-x7k2p"


def test_job_wait_reports_elapsed_time_until_the_execution_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "time", FakeClock())
    said: list[str] = []
    jobs.wait_done(Operation(polls_until_done=2), EXECUTION, timeout=600, poll_seconds=10, say=said.append)
    assert len(said) == 2
    assert all(re.fullmatch(r"  waiting for alle-staging-migrate-x7k2p to finish: \d+ s of 600 s", s) for s in said)


def test_job_wait_stops_at_the_timeout_with_one_line_saying_the_job_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "time", FakeClock())
    with pytest.raises(OpsError) as raised:
        jobs.wait_done(Operation(polls_until_done=None), EXECUTION, timeout=60, poll_seconds=10, say=lambda _: None)
    message = str(raised.value)
    assert message.startswith("alle-staging-migrate-x7k2p is still running after ")
    assert "goes on in Cloud Run" in message and message.endswith("allow longer with --timeout.")
    assert "\n" not in message
