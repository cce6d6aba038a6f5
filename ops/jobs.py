"""Run a stack's Cloud Run jobs on demand: names from the stack outputs, the call through google-cloud-run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ops.errors import OpsError


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


def run_and_wait(ref: JobRef, args: list[str] | None = None, timeout: float = 3600) -> ExecutionLike:
    """Start an execution and wait for it. The only function here that talks to Google Cloud."""
    from google.api_core.exceptions import GoogleAPICallError
    from google.cloud import run_v2

    client = run_v2.JobsClient()
    operation = client.run_job(request=run_request(ref, args))
    print(f"started {operation.metadata.name}\nlogs: {logs_url(operation.metadata.name)}", flush=True)
    try:
        execution: ExecutionLike = operation.result(timeout=timeout)  # type: ignore[no-untyped-call]
    except GoogleAPICallError:
        execution = run_v2.ExecutionsClient().get_execution(name=operation.metadata.name)
    return execution
