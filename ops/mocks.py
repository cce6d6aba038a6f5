"""Pulumi mocks that record what the program registers: inputs, parent, dependencies, protect, stack outputs.

Mocks accept anything, so the values they hand back are the ones GCP would (a version number, a digest),
and what they record is exactly what the engine would receive.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs

SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig


def plain(value: Any, mark_secrets: bool = True) -> Any:
    """Unwrap Pulumi's secret envelopes: into {"secret": value} so tests can see what was secret, or bare."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            inner = plain(value.get("value"), mark_secrets)
            return {"secret": inner} if mark_secrets else inner
        return {k: plain(v, mark_secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v, mark_secrets) for v in value]
    return value


PROJECT_NUMBER = "123456789012"
#: Service agents' domains by API, as GCP names them (fabric: modules/project/service-agents.yaml).
SERVICE_AGENTS = {
    "run.googleapis.com": "serverless-robot-prod",
    "servicenetworking.googleapis.com": "service-networking",
}


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = plain(args.inputs, mark_secrets=False)
        outputs = dict(args.inputs)
        name = inputs.get("name", args.name)
        typ = args.typ
        if typ == "gcp:serviceaccount/account:Account":
            email = f"{inputs['accountId']}@{inputs['project']}.iam.gserviceaccount.com"
            outputs |= {"email": email, "member": f"serviceAccount:{email}"}
        elif typ == "gcp:sql/databaseInstance:DatabaseInstance":
            outputs |= {
                "privateIpAddress": "10.20.0.3",
                "connectionName": f"{inputs['project']}:{inputs['region']}:{name}",
            }
        elif typ == "gcp:redis/instance:Instance":
            outputs |= {
                "host": "10.20.1.4",
                "port": 6378,
                "authString": "mock-auth-string",
                "serverCaCerts": [{"cert": "-----BEGIN CERTIFICATE-----\nMOCK\n-----END CERTIFICATE-----\n"}],
            }
        elif typ == "gcp:projects/serviceIdentity:ServiceIdentity":
            agent = SERVICE_AGENTS[inputs["service"]]
            email = f"service-{PROJECT_NUMBER}@{agent}.iam.gserviceaccount.com"
            outputs |= {"email": email, "member": f"serviceAccount:{email}"}
        elif typ == "gcp:secretmanager/secretVersion:SecretVersion":
            outputs |= {"version": "1", "name": f"{inputs['secret']}/versions/1"}
        elif typ == "gcp:secretmanager/secret:Secret":
            outputs |= {"name": f"projects/{inputs['project']}/secrets/{inputs['secretId']}"}
        elif typ == "gcp:cloudrunv2/service:Service":
            host = f"{name}-abc123-ew.a.run.app"
            statuses = [
                {**t, "uri": f"https://{t['tag']}---{host}" if t.get("tag") else ""} for t in inputs.get("traffics", [])
            ]
            outputs |= {"uri": f"https://{host}", "trafficStatuses": statuses}
        elif typ == "gcp:compute/globalAddress:GlobalAddress" and inputs.get("addressType") == "EXTERNAL":
            outputs |= {"address": "203.0.113.7"}
        elif typ == "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig":
            outputs |= {"uptimeCheckId": f"{args.name}-x1y2z3"}
        elif typ == "docker:index/image:Image":
            repository = inputs["imageName"].rsplit(":", 1)[0]
            digest = hashlib.sha256(inputs["imageName"].encode()).hexdigest()
            outputs |= {"repoDigest": f"{repository}@sha256:{digest}"}
        elif typ == "random:index/randomId:RandomId":
            # The same bytes on every run: the engine keeps a RandomId's bytes until its keepers change or it is
            # replaced, which tests/gcp_model.py plays across a sequence of runs.
            outputs |= {"hex": hashlib.sha256(args.name.encode()).hexdigest()[: 2 * int(inputs["byteLength"])]}
        elif typ == "random:index/randomPassword:RandomPassword":
            outputs |= {"result": "r" * int(inputs["length"])}
        return f"{args.name}-id", outputs

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "gcp:organizations/getProject:getProject":  # noqa: S105 - a function token
            return {"number": PROJECT_NUMBER, "projectId": args.args.get("projectId")}, []
        return {}, []


class RecordingMonitor(MockMonitor):
    """Keeps every registration request as the engine would see it."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.recorded: list[dict[str, Any]] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            self.recorded.append(
                {
                    "type": request.type,
                    "name": request.name,
                    "urn": response.urn,
                    "parent": request.parent,
                    "custom": request.custom,
                    "protect": bool(request.protect),
                    "retain_on_delete": bool(request.retainOnDelete),
                    "ignore_changes": list(request.ignoreChanges),
                    "aliases": [alias.spec.name for alias in request.aliases if alias.HasField("spec")],
                    "timeouts": {
                        k: v
                        for k in ("create", "update", "delete")
                        if (v := getattr(request.customTimeouts, k, "")) and request.HasField("customTimeouts")
                    },
                    "dependencies": list(request.dependencies),
                    "inputs": plain(rpc.deserialize_properties(request.object, keep_unknowns=True)),
                }
            )
        return response
