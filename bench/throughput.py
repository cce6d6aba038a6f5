"""HTTP throughput of `alle web` side by side with what bounds it, in one run on one machine.

Runs, each for the same duration: a bare ASGI hello app (uvicorn + httptools + uvloop) at 16, 64 and 128
concurrent connections; `alle web` (APP_ENV=production, one process, access log on) serving a cached
`GET /v1/tasks/{id}`, `GET /v1/tasks` and `POST /v1/tasks` at the same concurrencies; and pgbench's single-row
insert with 16 clients on the same embedded PostgreSQL. Each alle run comes right after the run it is compared
with: the hello app at the same concurrency before each cached read and list, pgbench before the creates. Last,
the create again from a web with production's processes and pool (Pulumi.production.yaml), at the concurrency
Cloud Run sends it. Prints req/s, the ratio to the baseline, p50, p99, errors by kind and the web process's RSS.
Asserts nothing.

Run: venv/bin/python bench/throughput.py [--duration SECONDS]. Needs wrk (Debian/Ubuntu: `sudo apt-get install wrk`,
macOS: `brew install wrk`). Everything it starts is stopped and its files removed, also on Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "app" / "dev"))

import httpx  # noqa: E402
import psycopg  # noqa: E402

import backing  # noqa: E402

CONCURRENCY = (16, 64, 128)
PGBENCH_CLIENTS = 16
WRK_TIMEOUT = "2s"
#: Where wrk is looked for besides PATH, so the script also runs with an empty PATH.
WRK_DIRS = ("/usr/bin", "/usr/local/bin", "/opt/homebrew/bin")
BIN = Path(sys.executable).parent  # the venv's bin: `alle` is installed there

# One table per thread is merged in done(); response() counts statuses, done() prints one JSON line.
WRK_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
%(request)s
%(response)s
function done(summary, latency, requests)
  local parts = {}
  for _, thread in ipairs(threads) do
    local counted = thread:get("statuses") or {}
    for status, n in pairs(counted) do parts[status] = (parts[status] or 0) + n end
  end
  local codes = {}
  for status, n in pairs(parts) do table.insert(codes, string.format('"%%d": %%d', status, n)) end
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, "connect": %%d, '
    .. '"read": %%d, "write": %%d, "timeout": %%d, "status_errors": %%d, "statuses": {%%s}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    summary.errors.status, table.concat(codes, ", ")))
end
"""
COUNT_STATUSES = "function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end"


async def hello(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
    """The baseline: the least an ASGI app on the same server stack can do per request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


@dataclass
class Result:
    name: str
    concurrency: int
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float = 0.0
    ok: int = 0
    overload: int = 0
    other: int = 0
    timeouts: int = 0
    socket_errors: int = 0
    cpu_ms: float | None = None  # CPU time of the serving process per request: less sensitive to a busy machine
    unit: str = "req/s"
    baseline: Result | None = field(default=None, repr=False)


def find_wrk() -> str | None:
    return shutil.which("wrk") or shutil.which("wrk", path=os.pathsep.join(WRK_DIRS))


def pgbench_path() -> Path:
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"


class Processes:
    """Every child started here, each in its own session so Ctrl-C reaches only this script, which stops them."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)


def wait_ok(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was ready; see its log above.")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s.")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time so far of a process and its children (gunicorn's processes), from /proc."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(
    binary: str,
    workdir: Path,
    name: str,
    url: str,
    concurrency: int,
    duration: int,
    request: str,
    *,
    count: bool,
    server: int,
) -> Result:
    script = workdir / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}-{concurrency}.lua"
    script.write_text(WRK_SCRIPT % {"request": request, "response": COUNT_STATUSES if count else ""})
    argv = [binary, "-t2", f"-c{concurrency}", f"-d{duration}s", f"--timeout={WRK_TIMEOUT}", "-s", str(script), url]
    cpu_before = cpu_seconds(server)
    run = subprocess.run(argv, capture_output=True, text=True, check=True, start_new_session=True)
    cpu = cpu_seconds(server) - cpu_before
    line = next(text for text in reversed(run.stdout.splitlines()) if text.startswith("{"))
    figures = json.loads(line)
    statuses = {int(k): v for k, v in figures["statuses"].items()}
    requests = figures["requests"]
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300) if count else requests
    return Result(
        name=name,
        concurrency=concurrency,
        rate=ok / (figures["duration_us"] / 1e6),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        ok=ok,
        overload=statuses.get(503, 0),
        other=(requests - ok - statuses.get(503, 0)) if count else figures["status_errors"],
        timeouts=figures["timeout"],
        socket_errors=figures["connect"] + figures["read"] + figures["write"],
        cpu_ms=1000 * cpu / max(requests, 1),
    )


def lua_request(method: str, path: str, token: str, body: str | None = None) -> str:
    lines = [f'wrk.method = "{method}"', f'wrk.path = "{path}"', f'wrk.headers["Authorization"] = "Bearer {token}"']
    if body is not None:
        lines += ['wrk.headers["Content-Type"] = "application/json"', f"wrk.body = {json.dumps(body)}"]
    return "\n".join(lines)


def pgbench(services: backing.Backing, workdir: Path, duration: int) -> Result:
    """pgbench's own single-row insert on the server the app uses, in a database of its own."""
    uri = services.create_database("pgbench")
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_insert (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "title text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
    script = workdir / "insert.sql"
    script.write_text("INSERT INTO bench_insert (title) VALUES ('bench');\n")
    logs = workdir / "pgbench-log"
    logs.mkdir()
    argv = [str(pgbench_path()), "-n", "-c", str(PGBENCH_CLIENTS), "-j", "2", "-T", str(duration), "-f", str(script)]
    argv += ["-l", f"--log-prefix={logs / 'tx'}", uri]
    run = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=workdir, start_new_session=True)
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", run.stdout).group(1))  # type: ignore[union-attr]
    failed = re.search(r"number of failed transactions: (\d+)", run.stdout)
    latencies = sorted(int(line.split()[2]) for path in logs.iterdir() for line in path.read_text().splitlines())
    cuts = statistics.quantiles(latencies, n=100)
    return Result(
        name="pgbench single-row insert",
        concurrency=PGBENCH_CLIENTS,
        rate=tps,
        p50_ms=cuts[49] / 1000,
        p99_ms=cuts[98] / 1000,
        max_ms=latencies[-1] / 1000,
        ok=len(latencies),
        other=int(failed.group(1)) if failed else 0,
        unit="tps",
    )


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def default_sizing() -> str:
    """The sizing a run measures: the app's defaults."""
    from alle.config import Settings

    names = ("MAX_REQUESTS_IN_FLIGHT", "DATABASE_POOL_SIZE", "WEB_CONCURRENCY")
    return ", ".join(f"{name}={Settings.model_fields[name].default}" for name in names)


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line)
        model = next(names, "")
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs{f' ({model})' if model else ''}"


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "  n/a "


def report(
    results: list[Result], web_rss: tuple[float, float], started: datetime, duration: int, load: str, sizing: str
) -> None:
    print()
    print(f"alle HTTP benchmark, {started:%Y-%m-%d %H:%M} UTC, {machine()}, Python {platform.python_version()}")
    print(f"{duration} s per run, wrk -t2 --timeout {WRK_TIMEOUT} on the same machine; load average {load}")
    print(f"alle web: one process, the app's default sizing ({sizing}); the last row, production's sizing")
    print()
    header = f"{'load':30} {'conc':>4} {'rate':>14} {'ratio':>22} {'p50':>9} {'p99':>9} {'max':>9}"
    print(header + f" {'2xx':>8} {'503':>7} {'other':>6} {'timeout':>7} {'sockerr':>7} {'cpu/req':>8}")
    for r in results:
        ratio = f"{percent(r.rate, r.baseline.rate)} of {r.baseline.name.split()[0]}" if r.baseline else ""
        print(
            f"{r.name:30} {r.concurrency:>4} {r.rate:>10,.0f} {r.unit:<5}{ratio:>20} {r.p50_ms:>7.2f}ms "
            f"{r.p99_ms:>7.2f}ms {r.max_ms:>7.1f}ms {r.ok:>8} {r.overload:>7} {r.other:>6} {r.timeouts:>7} "
            f"{r.socket_errors:>7} {f'{r.cpu_ms:.3f}ms' if r.cpu_ms is not None else '':>8}"
        )
    print()
    print(f"alle web RSS after the runs: {web_rss[0]:.0f} MiB (peak {web_rss[1]:.0f} MiB)")
    by = {(r.name, r.concurrency): r for r in results}
    read64 = by[("cached GET /v1/tasks/{id}", 64)]
    hello64 = read64.baseline
    assert hello64 is not None
    create16, pg = by[("create POST /v1/tasks", 16)], by[("pgbench single-row insert", PGBENCH_CLIENTS)]
    print("targets (issue 7):")
    print(f"  cached read @64 / hello @64      {percent(read64.rate, hello64.rate)}  (at least 5%, aim 25%)")
    print(f"  create @16 / pgbench @16         {percent(create16.rate, pg.rate)}  (at least 6%)")
    for name in ("cached GET /v1/tasks/{id}", "list GET /v1/tasks", "create POST /v1/tasks"):
        at128, at64 = by[(name, 128)], by[(name, 64)]
        print(
            f"  {name:26} @128 / @64  {percent(at128.rate, at64.rate)}  (at least 70%; "
            f"{at128.timeouts} timeouts, {at128.other} non-2xx other than 503)"
        )
    p99 = max(
        by[(name, 64)].p99_ms for name in ("cached GET /v1/tasks/{id}", "list GET /v1/tasks", "create POST /v1/tasks")
    )
    print(f"  worst p99 @64                  {p99:7.1f} ms (under 150 ms)")
    production = results[-1]
    print(
        f"  {production.name} @{production.concurrency}    {production.overload} 503s "
        "(should be none: the concurrency Cloud Run sends production's instance)"
    )
    print(f"  web RSS                        {web_rss[0]:7.0f} MiB (under 150 MiB)")


@contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the cleanup in `finally` runs either way."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(duration: int, wrk_binary: str) -> None:
    started = datetime.now(UTC)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="alle-bench-http-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        services = backing.start(workdir / "backing", persistent=False)
        stack.callback(services.stop)
        processes = Processes(workdir)
        stack.callback(processes.stop_all)

        hello_port, web_port = backing.free_port(), backing.free_port()
        hello_proc = processes.start(
            "hello", [sys.executable, __file__, "--serve-hello", str(hello_port)], dict(os.environ)
        )
        env = services.release_env(
            "production", "bench", SECRET_KEY=secrets.token_urlsafe(48), LOG_LEVEL="INFO", PORT=str(web_port)
        )
        subprocess.run([str(BIN / "alle"), "migrate"], env=env, check=True, capture_output=True)
        web = processes.start("web", [str(BIN / "alle"), "web"], env)
        wait_ok(f"http://127.0.0.1:{hello_port}/", hello_proc, "the hello app")
        wait_ok(f"http://127.0.0.1:{web_port}/readyz", web, "alle web")

        base = f"http://127.0.0.1:{web_port}"
        credentials = {"email": "bench@example.com", "password": "correct horse battery"}
        httpx.post(f"{base}/v1/auth/signup", json=credentials).raise_for_status()
        token = httpx.post(f"{base}/v1/auth/login", json=credentials).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        tasks = [httpx.post(f"{base}/v1/tasks", json={"title": f"seed {i}"}, headers=auth).json() for i in range(20)]
        for _ in range(2):  # a fresh process reads the cache epoch first, so the second read caches the task
            httpx.get(f"{base}/v1/tasks/{tasks[0]['id']}", headers=auth).raise_for_status()

        loads = [
            ("cached GET /v1/tasks/{id}", lua_request("GET", f"/v1/tasks/{tasks[0]['id']}", token)),
            ("list GET /v1/tasks", lua_request("GET", "/v1/tasks", token)),
            ("create POST /v1/tasks", lua_request("POST", "/v1/tasks", token, '{"title": "bench"}')),
        ]
        results: list[Result] = []

        def measure(name: str, url: str, concurrency: int, request: str, server: int, *, app: bool) -> Result:
            result = wrk(wrk_binary, workdir, name, url, concurrency, duration, request, count=app, server=server)
            results.append(result)
            print(f"  done: {name} @{concurrency}", file=sys.stderr, flush=True)
            return result

        # Each ratio compares runs made one right after the other: this VM's speed drifts by a third within
        # minutes, and a baseline measured a minute earlier would carry that drift into the ratio.
        *read_loads, (create, create_request) = loads
        for name, request in read_loads:
            for concurrency in CONCURRENCY:
                hello_run = measure(
                    "bare ASGI hello", f"http://127.0.0.1:{hello_port}/", concurrency, "", hello_proc.pid, app=False
                )
                measure(name, base + "/", concurrency, request, web.pid, app=True).baseline = hello_run
        pg = pgbench(services, workdir, duration)
        print(f"  done: {pg.name} @{pg.concurrency}", file=sys.stderr, flush=True)
        for concurrency in CONCURRENCY:
            measure(create, base + "/", concurrency, create_request, web.pid, app=True).baseline = pg
        results.append(pg)
        web_rss = rss_mib(web.pid)
        processes.stop(web)  # the last run has the machine to itself, as every other did
        results.append(production_create(processes, env, create_request, wrk_binary, workdir, duration))
        report(results, web_rss, started, duration, load, default_sizing())


def production_sizing() -> tuple[dict[str, str], int]:
    """The web sizing production deploys, as its env, and the concurrency Cloud Run sends an instance: both as the
    Pulumi program derives them from Pulumi.production.yaml (components/config.py)."""
    sys.path.insert(0, str(ROOT))
    import pulumi

    from components.config import parse
    from ops.graph import stack_config

    # CI pins production's image at promotion; sizing does not depend on which image it is.
    pinned = {"alle:image": "europe-west1-docker.pkg.dev/alle-registry/alle/alle@sha256:" + "0" * 64}
    config = parse("production", stack_config("production", pinned), pulumi.Output.from_input("unused"))
    # wrk sends no X-Forwarded-For: the hops the load balancer adds would find none.
    env = {name: value for name, value in config.app_env.items() if name != "TRUSTED_PROXY_HOPS"}
    return env, config.web_container_concurrency


def production_create(
    processes: Processes,
    env: dict[str, str],
    request: str,
    wrk_binary: str,
    workdir: Path,
    duration: int,
) -> Result:
    """Creates from a web with production's processes and pool, at the concurrency Cloud Run sends it: the
    processes share the port unevenly, and none of these requests may get a 503 (alle.api.limits)."""
    sizing, concurrency = production_sizing()
    port = backing.free_port()
    web = processes.start("web-production", [str(BIN / "alle"), "web"], {**env, **sizing, "PORT": str(port)})
    wait_ok(f"http://127.0.0.1:{port}/readyz", web, "alle web with production's sizing")
    name = f"create, {sizing['WEB_CONCURRENCY']} processes"
    result = wrk(
        wrk_binary,
        workdir,
        name,
        f"http://127.0.0.1:{port}/",
        concurrency,
        duration,
        request,
        count=True,
        server=web.pid,
    )
    print(f"  done: {name} @{concurrency}", file=sys.stderr, flush=True)
    processes.stop(web)
    return result


def serve_hello(port: int) -> None:
    import uvicorn

    uvicorn.run(
        hello, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--serve-hello", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hello:
        serve_hello(args.serve_hello)
        return 0
    wrk_binary = find_wrk()
    if wrk_binary is None:
        print(
            "bench/throughput.py needs wrk, the HTTP load generator, and it is not installed. Install it "
            "(Debian/Ubuntu: sudo apt-get install wrk; macOS: brew install wrk) and run this again.",
            file=sys.stderr,
        )
        return 2
    try:
        with interrupts_as_keyboard_interrupt():
            run(args.duration, wrk_binary)
    except KeyboardInterrupt:
        print("interrupted; everything this run started has been stopped.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
