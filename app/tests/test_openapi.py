"""The OpenAPI document against the API: every error a route can answer is declared, with the body it really sends.

Schemathesis explores the same ground at random in bin/test (app/dev/schemathesis_run.py); these tests pin the
rules and the known cases, so a regression names itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis_run
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from limits import parse
from pydantic import BaseModel, ValidationError
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.core.warnings import SchemathesisWarning

from alle.api.app import create_app
from alle.api.limits import PROBES
from alle.api.schemas import WHITESPACE, SignUp, TaskCreate
from alle.config import Settings
from conftest import OFFLINE_ENV, SharedWeb, signup_and_login

JSON_BODY = "application/json"


@pytest.fixture(scope="module")
def app() -> FastAPI:
    """Built in process: the document needs no backing service (they are opened in the lifespan)."""
    settings = Settings(**OFFLINE_ENV)  # type: ignore[arg-type]
    return create_app(settings)


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in document["paths"].items() for method, op in item.items()]


def _can_answer(method: str, path: str, operation: dict[str, Any], parses_json: bool) -> set[int]:
    """The error statuses that the dependencies, FastAPI and the middleware give this operation, whatever it does."""
    statuses = set()
    parameters = operation.get("parameters", [])
    body = operation.get("requestBody", {})
    if operation.get("security"):
        statuses.add(401)  # the bearer session dependency
    if any(parameter["in"] == "path" for parameter in parameters):
        statuses |= {404, 422}  # an id that is not a UUID, or not this user's
    if parameters or body:
        statuses.add(422)
    if parses_json:
        statuses.add(400)  # FastAPI: a body that is not UTF-8 cannot be read as JSON
    if method not in ("GET", "HEAD"):
        statuses.add(413)  # errors.BodyLimit, or the attachment limit
    if path not in PROBES:
        statuses.add(503)  # limits.InFlightLimit at capacity, or the database pool
    return statuses


def test_every_operation_declares_the_errors_its_session_parameters_and_middleware_can_answer(
    app: FastAPI, document: dict[str, Any]
) -> None:
    parse_json = {
        (method, route.path)
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute) and route.original_route.body_field is not None
        for method in route.methods or ()
    }
    assert ("POST", "/v1/tasks") in parse_json
    missing = {
        f"{method} {path}": sorted(
            _can_answer(method, path, op, (method, path) in parse_json) - {int(status) for status in op["responses"]}
        )
        for method, path, op in _operations(document)
    }
    assert {label: statuses for label, statuses in missing.items() if statuses} == {}


def test_an_operation_declares_the_bearer_scheme_exactly_when_it_refuses_a_request_without_a_token(
    app: FastAPI, document: dict[str, Any]
) -> None:
    """Some routes read the token themselves (deps.SessionRoute, get_task), so their security entry is written by
    hand: this holds it to what the route does. In process: the session check answers before any service is used."""

    async def refused_without_a_token() -> dict[tuple[str, str], bool]:
        app.state.services = object()  # never reached by a request that has no token
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        refused = {}
        async with httpx.AsyncClient(transport=transport, base_url="http://alle.test") as client:
            for method, path, _ in _operations(document):
                url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
                refused[method, path] = (await client.request(method, url)).status_code == 401
        del app.state.services
        return refused

    refused = asyncio.run(refused_without_a_token())
    declared = {(method, path): bool(operation.get("security")) for method, path, operation in _operations(document)}
    assert declared == refused
    assert sum(refused.values()) >= 12
    named = {
        name for _, _, operation in _operations(document) for entry in operation.get("security", []) for name in entry
    }
    assert named <= set(document["components"]["securitySchemes"])


def test_every_error_is_declared_as_a_problem_or_for_422_as_invalid_input(document: dict[str, Any]) -> None:
    """One error model: FastAPI's own 422 schema (with `input`, which this API never sends back) appears nowhere."""
    wrong = []
    for method, path, op in _operations(document):
        for status, response in op["responses"].items():
            if int(status) < 400 or path == "/readyz":
                continue
            expected = "Invalid" if status == "422" else "Problem"
            declared = response["content"][JSON_BODY]["schema"]["$ref"]
            if declared != f"#/components/schemas/{expected}":
                wrong.append(f"{method} {path} {status}: {declared}")
    assert wrong == []
    assert "HTTPValidationError" not in document["components"]["schemas"]
    field_error = document["components"]["schemas"]["FieldError"]
    assert set(field_error["properties"]) == {"loc", "msg", "type"}


def test_patch_declares_only_due_date_as_nullable_as_the_handler_refuses_null_for_the_others(
    document: dict[str, Any],
) -> None:
    fields = document["components"]["schemas"]["TaskUpdate"]["properties"]
    nullable = {name for name, schema in fields.items() if {"type": "null"} in schema.get("anyOf", [])}
    assert nullable == {"due_date"}


def test_sign_up_declares_the_password_policy_length(document: dict[str, Any]) -> None:
    assert document["components"]["schemas"]["SignUp"]["properties"]["password"]["minLength"] == 12


@pytest.fixture
def web(shared_web: SharedWeb) -> SharedWeb:
    """Shared: each test signs up a user of its own, and the throttled account is a new one too."""
    return shared_web


def test_every_error_a_route_raises_is_declared_and_matches_its_schema(
    web: SharedWeb, document: dict[str, Any]
) -> None:
    schema = schemathesis.openapi.from_dict(document)
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "t"}, headers=auth).json()
    report = httpx.post(f"{web.url}/v1/reports", headers=auth).json()  # no worker: it stays pending
    task_url = f"/v1/tasks/{task['id']}"
    keyed = {**auth, "Idempotency-Key": f"k-{uuid.uuid4()}"}
    httpx.post(f"{web.url}/v1/tasks", json={"title": "first"}, headers=keyed)
    stranger = f"{uuid.uuid4().hex[:10]}@example.com"
    json_type = {"Content-Type": JSON_BODY}
    probes: list[tuple[str, str, int, dict[str, Any]]] = [
        ("POST", "/v1/tasks", 400, {"content": b'{"title": "\xff"}', "headers": {**auth, **json_type}}),
        ("GET", "/v1/tasks/{task_id}", 401, {"url": task_url}),
        ("POST", "/v1/auth/login", 401, {"json": {"email": stranger, "password": "not the password"}}),
        ("GET", "/v1/tasks/{task_id}", 404, {"url": f"/v1/tasks/{uuid.uuid4()}", "headers": auth}),
        ("POST", "/v1/tasks", 409, {"json": {"title": "second"}, "headers": keyed}),
        (
            "GET",
            "/v1/reports/{report_id}/download",
            409,
            {"url": f"/v1/reports/{report['id']}/download", "headers": auth},
        ),
        (
            "POST",
            "/v1/tasks",
            413,
            {"content": b'{"title": "' + b"x" * 70_000 + b'"}', "headers": {**auth, **json_type}},
        ),
        ("POST", "/v1/auth/signup", 422, {"json": {"email": stranger, "password": "1qaz2wsx3edc"}}),
        ("PATCH", "/v1/tasks/{task_id}", 422, {"url": task_url, "json": {"title": None}, "headers": auth}),
        (
            "POST",
            "/v1/tasks/{task_id}/attachments",
            422,
            {"url": f"{task_url}/attachments", "params": {"filename": "empty.txt"}, "content": b"", "headers": auth},
        ),
        (
            "POST",
            "/v1/tasks/{task_id}/attachments",
            422,
            {
                "url": f"{task_url}/attachments",
                "params": {"filename": "a.bin"},
                "content": b"x",
                "headers": {**auth, "Content-Type": "application/" + "x" * 300},
            },
        ),
    ]
    throttled = {"email": f"{uuid.uuid4().hex[:10]}@example.com", "password": "not the password either"}
    for _ in range(parse(Settings.model_fields["LOGIN_ATTEMPTS_PER_ACCOUNT"].default).amount):  # the web's default
        httpx.post(f"{web.url}/v1/auth/login", json=throttled)
    probes.append(("POST", "/v1/auth/login", 429, {"json": throttled}))
    failures = []
    for method, path, status, request in probes:
        url = request.pop("url", path)
        response = httpx.request(method, web.url + url, **request)
        label = f"{method} {url} → {response.status_code}"
        if response.status_code != status:
            failures.append(f"{label}, expected {status}: {response.text[:200]}")
        elif str(status) not in document["paths"][path][method.lower()]["responses"]:
            failures.append(f"{label}: not declared")
        else:
            try:
                schema[path][method].validate_response(response)
            except Exception as error:  # noqa: BLE001 - every mismatch is collected and reported together
                failures.append(f"{label}: {error}")
    assert failures == []


def test_a_method_the_path_does_not_have_is_405_with_every_method_it_has_in_allow(web: SharedWeb) -> None:
    """Starlette names only the first route's methods; RFC 9110 wants all of the target resource's."""
    refused = httpx.request("PUT", f"{web.url}/v1/tasks/{uuid.uuid4()}")
    assert refused.status_code == 405
    assert set(refused.headers["Allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
    assert "use " in refused.json()["detail"]


def test_the_document_is_the_one_the_live_web_serves(web: SharedWeb, document: dict[str, Any]) -> None:
    """What the in-process tests above read is what clients and Schemathesis get."""
    served = httpx.get(f"{web.url}/openapi.json").json()
    assert (served["paths"], served["components"]) == (document["paths"], document["components"])


#: Addresses at the edges of what `format: email` allows and the API refuses, and ones it accepts.
ADDRESSES = [f"someone@mail.{name}" for name in SPECIAL_USE_DOMAIN_NAMES] + [
    *("someone@example.com", "a@example.c", "ü@exämple.com", "a.b+c@sub.example.co.uk"),
    *("a@example", "a@example.123", "a@example.x1", '"a b"@example.com', "a@[127.0.0.1]", "a@[IPv6:::1]"),
    *("a@example\u3002com", "a@EXAMPLE.COM", "a@mail.test\n", 'a@x.com\u2028"'),
]


def test_the_email_pattern_refuses_the_kinds_format_email_allows_and_the_validator_refuses_in_python_and_javascript(
    document: dict[str, Any],
) -> None:
    """`format: email` alone admits `x@mail.test` and `a@example`; the API refuses them, so the document must say so
    too (Schemathesis's cases come from the document). Addresses `format: email` itself refuses are its business."""
    pattern = document["components"]["schemas"]["SignUp"]["properties"]["email"]["pattern"]
    accepted = [_valid(SignUp, email=address, password="a long enough passphrase") for address in ADDRESSES]
    assert [re.search(pattern, address) is not None for address in ADDRESSES] == accepted
    assert _javascript_matches(pattern, ADDRESSES) == accepted


def _valid(model: type[BaseModel], **fields: object) -> bool:
    try:
        model(**fields)
    except ValidationError:
        return False
    return True


def _javascript_matches(pattern: str, texts: list[str]) -> list[bool]:
    """Which texts `pattern` matches as JavaScript reads it, with the `u` flag: JSON Schema's patterns are
    ECMAScript's, and differ from Python's (`\\s`, `\\d`, `$`)."""
    if shutil.which("node") is None:
        message = "node is not installed; bin/test needs it (README, 'Two commands')."
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    script = (
        "const {pattern, texts} = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(texts.map(t => new RegExp(pattern, 'u').test(t))));"
    )
    node = subprocess.run(
        ["node", "-e", script],
        input=json.dumps({"pattern": pattern, "texts": texts}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert node.returncode == 0, node.stderr
    matches: list[bool] = json.loads(node.stdout)
    return matches


def test_the_whitespace_class_is_what_str_strip_removes() -> None:
    everything = "".join(map(chr, range(0x110000)))
    assert re.findall(f"[{WHITESPACE}]", everything) == [c for c in everything if c.isspace()]


#: Titles at the edges of the rule. Lone surrogates are left out: JSON Schema describes Unicode text, which cannot
#: hold one (`Strict` refuses them, test_input.py).
TITLES = [" ", "\t\n", "\x1c\x85", "\u3000\u2028", "\ufeff", "\u200b", " x ", "x", "a\u0000b", "\u0000", ""]
TITLES += ["x" * 200, "x" * 201, " " * 200 + "x", "\U0001f600" * 200]


def test_the_title_schema_refuses_exactly_what_the_validator_refuses_read_by_python_and_by_javascript(
    document: dict[str, Any],
) -> None:
    """Schemathesis sent `" "`, which `minLength: 1` allows, and the API refused it: the document must say so.
    JSON Schema's patterns are ECMAScript's, whose `\\s` differs from Python's; Python's tools (Schemathesis)
    and JavaScript clients must both read the rule the validator applies."""
    schema = document["components"]["schemas"]["TaskCreate"]["properties"]["title"]
    accepted = [_valid(TaskCreate, title=title) for title in TITLES]
    lengths = [schema["minLength"] <= len(title) <= schema["maxLength"] for title in TITLES]
    python = [re.search(schema["pattern"], title) is not None for title in TITLES]
    javascript = _javascript_matches(schema["pattern"], TITLES)
    for reader in (python, javascript):
        assert [fits and matches for fits, matches in zip(lengths, reader, strict=True)] == accepted


def test_every_warning_fails_the_schemathesis_run_but_missing_auth_on_the_log_in_alone(
    document: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's settings as Schemathesis resolves them for each operation: a warning that a Schemathesis upgrade
    adds fails the log-in's cases too, and a broken log-in still fails every other operation's."""
    wfc = tmp_path / "wfc.json"
    wfc.write_text(json.dumps(schemathesis_run.wfc_document({name: {} for name in schemathesis_run.USERS})))
    monkeypatch.setenv("ALLE_WFC_AUTH", str(wfc))
    config = SchemathesisConfig.from_path(schemathesis_run.CONFIG)
    run_wide = set(config.projects.default.warnings.fail_on)
    failing: dict[str, set[SchemathesisWarning]] = {}
    for found in schemathesis.openapi.from_dict(document, config=config).get_all_operations():
        assert isinstance(found, Ok), found
        operation = found.ok()
        warnings = operation.schema.config.warnings_for(operation=operation)
        failing[operation.label] = {warning for warning in SchemathesisWarning if warnings.should_fail(warning)}
    assert SchemathesisWarning.MISSING_AUTH in run_wide
    assert failing.pop("POST /v1/auth/login") == run_wide - {SchemathesisWarning.MISSING_AUTH}
    assert failing and all(fails == run_wide for fails in failing.values())


@pytest.mark.parametrize(("app_env", "uis"), [("development", True), ("staging", False), ("production", False)])
def test_the_openapi_uis_which_load_cdn_scripts_onto_the_apps_origin_are_served_only_locally(
    app_env: str, uis: bool
) -> None:
    """Their scripts (a floating version, no integrity hashes) could read the browser client's token."""
    settings = Settings(**{**OFFLINE_ENV, "APP_ENV": app_env, "PASSWORD_HASH_MEMORY_KIB": "65536"})  # type: ignore[arg-type]
    paths = {getattr(route, "path", "") for route in create_app(settings).routes}
    expected = {"/docs", "/redoc"} if uis else set()
    assert {"/docs", "/redoc"} & paths == expected
    assert "/openapi.json" in paths
