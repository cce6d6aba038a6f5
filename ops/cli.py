"""alle-ops: promote a release by digest, run a stack's jobs, and print what a stack declares offline.

Each verb imports only what it needs, so `plan` does not pay for the cloud client libraries.
"""

from __future__ import annotations

import argparse
import math
import sys
import urllib.parse

from ops.errors import OpsError
from ops.pulumi_cli import TRAFFIC_UP_TIMEOUT, UP_TIMEOUT, PulumiCli, Stacks


def _promote(args: argparse.Namespace, stacks: Stacks) -> int:
    from ops import promote

    release = promote.promote(stacks, args.source, args.target)
    print(
        f"{args.target} now pins {release.image} (release {release.release}).\n"
        f"Review Pulumi.{args.target}.yaml, commit it, then: pulumi up --stack {args.target}"
    )
    return 0


def _pin(args: argparse.Namespace, stacks: Stacks) -> int:
    from ops import promote

    promote.pin(stacks, args.stack, promote.Release(image=args.image, release=args.release))
    print(
        f"{args.stack} now pins {args.image} (release {args.release}). Then: pulumi up --stack {args.stack}\n"
        "The migrate job runs again for this release; migrations are forward-only, so it must be a no-op."
    )
    return 0


def _status(args: argparse.Namespace, stacks: Stacks) -> int:
    from ops import promote

    for stack in args.stacks:
        running = promote.running(stacks.outputs(stack), stack)
        print(f"{stack}: release {running.release}  image {running.image}")
    return 0


def _job(args: argparse.Namespace, stacks: Stacks) -> int:
    from ops import jobs

    outputs = stacks.outputs(args.stack)
    if args.action == "list":
        for command, ref in sorted(jobs.jobs_of(outputs).items()):
            print(f"{command:20} {ref.resource}")
        return 0
    if not args.command:
        raise OpsError("name the job to run, e.g. `alle-ops job run migrate --stack staging`")
    ref = jobs.resolve(outputs, args.command)
    execution = jobs.run_and_wait(ref, args.extra or None, timeout=args.timeout)
    ok, summary = jobs.outcome(execution)
    print(f"{summary}\nlogs: {jobs.logs_url(execution.name)}")
    return 0 if ok else 1


def _migrate(args: argparse.Namespace, stacks: Stacks) -> int:
    from ops import migrate

    urn = migrate.retry(stacks, args.stack)
    print(f"{args.stack}: replaced {urn}; `alle migrate` ran under a new token, web and worker rolled out.")
    return 0


def _plan(args: argparse.Namespace, _: Stacks) -> int:
    from ops import plan

    changes = dict(change.split("=", 1) for change in args.set)
    if changes and not args.diff:
        args.diff = [args.stack, args.stack]
    if args.diff:
        left, right = plan.load(*args.diff, changes=changes)
        sys.stdout.write(plan.render_diff(left, right, markdown=args.markdown))
    else:
        [graph] = plan.load(args.stack)
        sys.stdout.write(plan.render(graph, markdown=args.markdown))
    return 0


def _release(args: argparse.Namespace, stacks: Stacks) -> int:
    from ops import traffic

    begun = traffic.begin(stacks, args.stack, args.release)
    print(
        f"{args.stack}: release {args.release} at {begun.percent}% of web traffic"
        + (
            f", {begun.previous} keeps {100 - (begun.percent or 0)}%."
            if begun.previous
            else " (first release with named revisions: it takes all traffic)."
        )
        + f"\nThen: pulumi up --stack {args.stack}; bin/alle-ops smoke --stack {args.stack} --candidate"
    )
    return 0


def _traffic(args: argparse.Namespace, stacks: Stacks) -> int:
    from ops import traffic

    if args.action == "rollback":
        now = traffic.rollback(stacks, args.stack)
    elif args.to is None:
        raise OpsError("say how much traffic the release takes, e.g. `alle-ops traffic shift --stack staging --to 10`")
    else:
        now = traffic.shift(stacks, args.stack, args.to)
    previous = f", {now.previous} {100 - (now.percent or 0)}%" if now.previous else ""
    print(f"{args.stack}: release {now.release} {now.percent}%{previous}")
    return 0


def _smoke(args: argparse.Namespace, stacks: Stacks) -> int:
    from ops.smoke import smoke

    outputs = stacks.outputs(args.stack) if args.stack else {}
    key = "candidate_url" if args.candidate else "web_url"
    url = args.url or outputs.get(key)
    if not url:
        raise OpsError(f"give --url, or --stack whose outputs carry {key}")
    if problem := _url_problem(url):
        raise OpsError(f"{args.stack}'s {key} {problem}")
    for line in smoke(url, release=outputs.get("release"), wait_seconds=args.timeout):
        print(f"ok: {line}")
    return 0


def _change(text: str) -> str:
    if "=" not in text or ":" not in text.split("=", 1)[0]:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE with a namespaced key, e.g. alle:webMinInstances=2"
        )
    return text


def _url_problem(text: str) -> str | None:
    """Why `text` is no base URL to smoke-test, or None: without a scheme urllib fails only when called, and the
    smoke test would retry that for its whole timeout."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{text!r} is not an http(s) URL with a host, e.g. https://staging.alle.app"
    return None


def _url(text: str) -> str:
    if problem := _url_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def _seconds(text: str) -> float:
    """A wait that can end: a positive, finite number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _pulumi_timeout(sub: argparse.ArgumentParser, default: float, why: str) -> None:
    """`--timeout` for a command that runs `pulumi up`; PulumiCli bounds each up with it."""
    sub.add_argument(
        "--timeout",
        dest="pulumi_timeout",
        type=_seconds,
        default=default,
        metavar="SECONDS",
        help=f"stop pulumi up after this long, with SIGINT so it writes its state (default: {default:.0f}, {why})",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alle-ops", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)
    pr = sub.add_parser("promote", help="pin the digest and release id the source stack runs into the target stack")
    pr.add_argument(
        "--from", dest="source", default="staging", metavar="STACK", help="stack to read (default: staging)"
    )
    pr.add_argument(
        "--to", dest="target", default="production", metavar="STACK", help="stack to pin (default: production)"
    )
    pr.set_defaults(run=_promote)
    pn = sub.add_parser("pin", help="pin a stack to an explicit digest (rollback)")
    pn.add_argument("stack", help="stack to pin, e.g. production")
    pn.add_argument("image", help="REGISTRY/PATH@sha256:<64 hex>")
    pn.add_argument("--release", required=True, help="the release id that image was built from")
    pn.set_defaults(run=_pin)
    st = sub.add_parser("status", help="which release each stack runs")
    st.add_argument("stacks", nargs="*", default=["staging", "production"], help="default: staging production")
    st.set_defaults(run=_status)
    jb = sub.add_parser(
        "job",
        help="list or run a stack's Cloud Run jobs",
        usage="%(prog)s {list,run} [COMMAND] --stack STACK [--timeout SECONDS] [-- ARG ...]",
        epilog="Arguments after -- replace the job's container arguments for this one execution, e.g.\n"
        "  alle-ops job run generate-report --stack production -- dead-jobs list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    jb.add_argument("action", choices=["list", "run"], help="list the stack's jobs, or run one and wait for it")
    jb.add_argument("command", nargs="?", help="migrate, cleanup-old-tasks, generate-report or prune-sessions")
    jb.add_argument("--stack", required=True, help="stack whose outputs name the jobs, e.g. staging")
    jb.add_argument(
        "--timeout",
        type=_seconds,
        default=3600,
        metavar="SECONDS",
        help="stop waiting after this long; the execution goes on (default: 3600)",
    )
    jb.set_defaults(run=_job)
    mg = sub.add_parser(
        "migrate", help="retry the release's migration (after a failure, or after a manual run and refresh)"
    )
    mg.add_argument("action", choices=["retry"], help="retry: pulumi up, replacing the token's RandomId")
    mg.add_argument("--stack", required=True, help="the stack whose migration runs again")
    _pulumi_timeout(mg, UP_TIMEOUT, "above the 40 minutes it may wait for the migrate job")
    mg.set_defaults(run=_migrate)
    pl = sub.add_parser("plan", help="what a stack declares, offline; or --diff A B")
    pl.add_argument("--stack", default="staging", help="stack to show (default: staging)")
    pl.add_argument("--diff", nargs=2, metavar=("A", "B"), help="show only what differs between stacks A and B")
    pl.add_argument("--markdown", action="store_true", help="Markdown for a pull-request comment")
    pl.add_argument(
        "--set",
        action="append",
        default=[],
        type=_change,
        metavar="KEY=VALUE",
        help="what if: change a config key of the (right-hand) stack, e.g. --set alle:redisMemoryGb=5",
    )
    pl.set_defaults(run=_plan)
    sm = sub.add_parser("smoke", help="check a deployed release: /readyz, its release id, a task round trip")
    sm.add_argument("--stack", help="stack whose outputs give web_url and the expected release")
    sm.add_argument("--url", type=_url, help="base URL to check instead of the stack's web_url, e.g. https://alle.app")
    sm.add_argument("--candidate", action="store_true", help="at this release's own URL (its traffic tag)")
    sm.add_argument(
        "--timeout",
        type=_seconds,
        default=120,
        metavar="SECONDS",
        help="how long the whole smoke test may take; the wait for /readyz to answer 200, ready may use all of it "
        "but min(30 s, a quarter of it), kept for the checks after it (default: 120)",
    )
    sm.set_defaults(run=_smoke)
    rl = sub.add_parser("release", help="begin a release: 0%% of web traffic, the serving release keeps the rest")
    rl.add_argument(
        "action", choices=["begin"], help="begin: set this release at 0%% of web traffic; pulumi up then deploys it"
    )
    rl.add_argument("--stack", required=True, help="stack to release to, e.g. staging")
    rl.add_argument("--release", required=True, help="the release id (the commit SHA in CI)")
    rl.set_defaults(run=_release)
    tr = sub.add_parser("traffic", help="move web traffic to this release, or roll it back to the previous one")
    tr.add_argument("action", choices=["shift", "rollback"], help="shift to --to percent, or roll back to the previous")
    tr.add_argument("--stack", required=True, help="stack whose web traffic moves, e.g. production")
    tr.add_argument("--to", type=int, help="percent of traffic this release takes (shift)")
    _pulumi_timeout(tr, TRAFFIC_UP_TIMEOUT, "above the 20 minutes it may wait for the web service's rollout")
    tr.set_defaults(run=_traffic)
    return p


def main(argv: list[str] | None = None, stacks: Stacks | None = None) -> int:
    """Arguments after `--` replace a job's container arguments: `job run generate-report ... -- dead-jobs list`."""
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser().parse_args(argv)
    args.extra = extra
    try:
        return int(args.run(args, stacks or PulumiCli(timeout=getattr(args, "pulumi_timeout", UP_TIMEOUT))))
    except OpsError as error:
        print(f"alle-ops: {error}", file=sys.stderr)
        return 1
