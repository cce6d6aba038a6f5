"""Hostile request bodies against a real `alle web`: bounded before parsing, refused by field, never echoed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from conftest import SharedWeb, signup_and_login


@pytest.fixture
def web(shared_web: SharedWeb) -> SharedWeb:
    """Shared: each test signs up a user of its own or sends what no route accepts."""
    return shared_web


def test_a_json_body_above_64_kib_is_refused_with_413_before_parsing(web: SharedWeb) -> None:
    auth = signup_and_login(web.url)
    body = b'{"title": "x", "notes": "' + b"a" * (64 * 1024) + b'"}'
    declared = httpx.post(f"{web.url}/v1/tasks", content=body, headers={**auth, "Content-Type": "application/json"})
    assert declared.status_code == 413
    assert declared.json() == {"detail": "Request bodies are limited to 65536 bytes."}


def test_a_chunked_body_without_a_length_is_counted_as_it_arrives(web: SharedWeb) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"email": "a@example.com", "password": "'
        for _ in range(100):
            yield b"p" * 4096
        yield b'"}'

    refused = httpx.post(f"{web.url}/v1/auth/login", content=chunks(), headers={"Content-Type": "application/json"})
    assert refused.status_code == 413
    assert b"ppp" not in refused.content


def test_a_body_under_the_limit_still_reaches_the_route(web: SharedWeb) -> None:
    auth = signup_and_login(web.url)
    created = httpx.post(f"{web.url}/v1/tasks", json={"title": "t", "notes": "n" * 10_000}, headers=auth)
    assert created.status_code == 201
    assert created.json()["notes"] == "n" * 10_000


def test_validation_errors_name_the_field_and_never_echo_the_value(web: SharedWeb) -> None:
    secret = "Zq9x!"  # too short, and in no error message
    refused = httpx.post(f"{web.url}/v1/auth/signup", json={"email": "not-an-email!x", "password": secret})
    assert refused.status_code == 422
    assert secret not in refused.text
    assert "not-an-email" not in refused.text
    fields = {tuple(error["loc"]) for error in refused.json()["detail"]}
    assert fields == {("body", "email"), ("body", "password")}
    for error in refused.json()["detail"]:
        assert set(error) == {"loc", "msg", "type"}


def test_an_invalid_json_body_is_not_echoed_either(web: SharedWeb) -> None:
    refused = httpx.post(
        f"{web.url}/v1/auth/login",
        content=b'{"email": "a@example.com", "password": "hunter2-hunter2',
        headers={"Content-Type": "application/json"},
    )
    assert refused.status_code == 422
    assert "hunter2" not in refused.text


def test_an_unknown_key_and_a_malformed_id_are_refused_without_quoting_them(web: SharedWeb) -> None:
    """Pydantic quotes an unknown key in `loc` and the offending characters of a UUID in `msg`."""
    auth = signup_and_login(web.url)
    extra = httpx.post(f"{web.url}/v1/tasks", json={"title": "t", "<script>zq9</script>": 1}, headers=auth)
    assert extra.status_code == 422
    assert "zq9" not in extra.text
    assert [error["loc"] for error in extra.json()["detail"]] == [["body"]]
    malformed = httpx.get(f"{web.url}/v1/tasks/0000zq9x-0000-0000-0000-000000000000", headers=auth)
    assert malformed.status_code == 422
    assert "zq9" not in malformed.text
    assert [error["loc"] for error in malformed.json()["detail"]] == [["path", "task_id"]]


@pytest.mark.parametrize(
    ("field", "value"),
    [("title", "a\u0000b"), ("notes", "a\u0000b"), ("title", "a\ud800b"), ("notes", "\udfff")],
    ids=["nul-title", "nul-notes", "surrogate-title", "lone-low-surrogate-notes"],
)
def test_nul_and_unpaired_surrogates_are_422_naming_the_field(web: SharedWeb, field: str, value: str) -> None:
    auth = signup_and_login(web.url)
    # json.dumps escapes both as \uXXXX, the way a hostile client would send them.
    body = json.dumps({"title": "t", field: value})
    refused = httpx.post(f"{web.url}/v1/tasks", content=body, headers={**auth, "Content-Type": "application/json"})
    assert refused.status_code == 422
    assert [error["loc"] for error in refused.json()["detail"]] == [["body", field]]
    assert httpx.get(f"{web.url}/v1/tasks", headers=auth).json()["total"] == 0


def test_a_nul_in_a_password_is_422_not_500(web: SharedWeb) -> None:
    refused = httpx.post(
        f"{web.url}/v1/auth/signup", json={"email": "nul@example.com", "password": "correct horse\u0000battery"}
    )
    assert refused.status_code == 422
    assert [error["loc"] for error in refused.json()["detail"]] == [["body", "password"]]


@pytest.mark.parametrize("due_date", [0, 1_700_000_000, "0", "1700000000", "2026-12-01T00:00:00", True])
def test_a_due_date_must_be_written_as_a_date(web: SharedWeb, due_date: object) -> None:
    auth = signup_and_login(web.url)
    refused = httpx.post(f"{web.url}/v1/tasks", json={"title": "t", "due_date": due_date}, headers=auth)
    assert refused.status_code == 422
    assert [error["loc"] for error in refused.json()["detail"]] == [["body", "due_date"]]
    accepted = httpx.post(f"{web.url}/v1/tasks", json={"title": "t", "due_date": "2026-12-01"}, headers=auth)
    assert accepted.json()["due_date"] == "2026-12-01"


def test_a_title_is_stored_stripped_and_one_of_whitespace_alone_gets_one_422_naming_the_title(web: SharedWeb) -> None:
    auth = signup_and_login(web.url)
    created = httpx.post(f"{web.url}/v1/tasks", json={"title": "\u3000 buy milk \n"}, headers=auth)
    assert created.json()["title"] == "buy milk"
    for refused in (
        httpx.post(f"{web.url}/v1/tasks", json={"title": " \t\x1c"}, headers=auth),
        httpx.patch(f"{web.url}/v1/tasks/{created.json()['id']}", json={"title": " "}, headers=auth),
    ):
        assert refused.status_code == 422
        assert [error["loc"] for error in refused.json()["detail"]] == [["body", "title"]]
    assert httpx.get(f"{web.url}/v1/tasks/{created.json()['id']}", headers=auth).json()["title"] == "buy milk"
