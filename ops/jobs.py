"""Run a stack's Cloud Run jobs on demand: names from the stack outputs, the call through google-cloud-run."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ops.errors import OpsError
from ops.progress import progress


class JobLookupError(OpsError):
    pass


@dataclass(frozen=True)
class JobRef:
    project: str
    region: str
    name: str

    @property
    def resource(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.name}"


def jobs_of(outputs: dict[str, Any]) -> dict[str, JobRef]:
    """Every job the stack exports, by command (migrate, cleanup-old-tasks, generate-report)."""
    try:
        project, region, names = outputs["project"], outputs["region"], outputs["jobs"]
    except KeyError as error:
        raise JobLookupError(f"the stack exports no {error.args[0]!r}; run `pulumi up` on it first") from error
    return {command: JobRef(project, region, name) for command, name in names.items()}


def resolve(outputs: dict[str, Any], command: str) -> JobRef:
    jobs = jobs_of(outputs)
    if command not in jobs:
        raise JobLookupError(f"no job {command!r}; this stack has: {', '.join(sorted(jobs))}")
    return jobs[command]


def logs_url(execution: str) -> str:
    """Cloud Console link to an execution's logs, from its resource name."""
    parts = execution.split("/")
    project, region, job, execution_id = parts[1], parts[3], parts[5], parts[7]
    return (
        f"https://console.cloud.google.com/run/jobs/executions/details/{region}/{execution_id}/logs"
        f"?project={project}&job={job}"
    )


class ExecutionLike(Protocol):
    name: str
    task_count: int
    succeeded_count: int
    failed_count: int
    cancelled_count: int


def outcome(execution: ExecutionLike) -> tuple[bool, str]:
    """Whether the execution succeeded, and one line saying so."""
    ok = execution.succeeded_count == execution.task_count and execution.failed_count == 0
    ok = ok and execution.cancelled_count == 0
    status = "succeeded" if ok else "FAILED"
    return ok, (
        f"{execution.name.rsplit('/', 1)[-1]} {status}: {execution.succeeded_count}/{execution.task_count} "
        f"tasks succeeded, {execution.failed_count} failed, {execution.cancelled_count} cancelled"
    )


def run_request(ref: JobRef, args: list[str] | None = None) -> Any:
    """The jobs.run request; `args` replaces the container's arguments for this one execution."""
    from google.cloud import run_v2

    overrides = None
    if args:
        container = run_v2.RunJobRequest.Overrides.ContainerOverride(args=args)
        overrides = run_v2.RunJobRequest.Overrides(container_overrides=[container])
    return run_v2.RunJobRequest(name=ref.resource, overrides=overrides)


class OperationLike(Protocol):
    def done(self) -> bool: ...


def wait_done(
    operation: OperationLike,
    execution: str,
    timeout: float,
    poll_seconds: float = 10,
    say: Callable[[str], None] = progress,
) -> None:
    """Poll until the execution finishes, saying how long it has been; past `timeout`, stop waiting (not the job)."""
    name = execution.rsplit("/", 1)[-1]
    started = time.monotonic()
    while not operation.done():
        elapsed = time.monotonic() - started
        if elapsed >= timeout:
            raise OpsError(
                f"{name} is still running after {elapsed:.0f} s and goes on in Cloud Run "
                f"(logs: {logs_url(execution)}); allow longer with --timeout."
            )
        say(f"  waiting for {name} to finish: {elapsed:.0f} s of {timeout:.0f} s")
        time.sleep(min(poll_seconds, timeout - elapsed))


def run_and_wait(ref: JobRef, args: list[str] | None = None, timeout: float = 3600) -> ExecutionLike:
    """Start an execution and wait for it. The only function here that talks to Google Cloud."""
    # google-api-core announces on import when Google stops supporting this Python; not for an operator.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\._python_version_support")
    from google.api_core.exceptions import GoogleAPICallError
    from google.cloud import run_v2

    client = run_v2.JobsClient()
    operation = client.run_job(request=run_request(ref, args))
    print(f"started {operation.metadata.name}\nlogs: {logs_url(operation.metadata.name)}", flush=True)
    wait_done(operation, operation.metadata.name, timeout)
    try:
        execution: ExecutionLike = operation.result()  # type: ignore[no-untyped-call]
    except GoogleAPICallError:
        execution = run_v2.ExecutionsClient().get_execution(name=operation.metadata.name)
    return execution
