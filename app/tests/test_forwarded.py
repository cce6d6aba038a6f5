"""The client address comes from the entries our own front ends append to X-Forwarded-For, counted from the right."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from alle.api.forwarded import ForwardedClient, client_address
from alle.api.throttle import address_key
from alle.config import Settings
from conftest import OFFLINE_ENV


@pytest.mark.parametrize(
    ("values", "hops", "client"),
    [
        (["203.0.113.9"], 1, "203.0.113.9"),  # run.app: the front end appended the client
        (["6.6.6.6, 203.0.113.9"], 1, "203.0.113.9"),  # whatever the client wrote stays to the left
        (["6.6.6.6,203.0.113.9, 35.191.0.1"], 2, "203.0.113.9"),  # the load balancer: `<client-ip>,<lb-ip>`
        (["6.6.6.6", "203.0.113.9, 35.191.0.1"], 2, "203.0.113.9"),  # the header sent twice is one list
        (["2001:db8::1, 35.191.0.1"], 2, "2001:db8::1"),
        (["35.191.0.1"], 2, None),  # fewer entries than our front ends append: not through them
        (["not-an-address, 35.191.0.1"], 2, None),
        ([], 1, None),
        (["203.0.113.9"], 0, None),  # hops 0: the header is ignored
    ],
)
def test_the_client_is_counted_from_the_right(values: list[str], hops: int, client: str | None) -> None:
    assert client_address(values, hops) == client


def _seen(hops: int, headers: list[tuple[bytes, bytes]]) -> Scope:
    """The scope the app behind the middleware gets."""
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {"type": "http", "scheme": "http", "client": ("169.254.1.1", 40000), "headers": headers}
    asyncio.run(ForwardedClient(app, hops)(scope, receive, send))
    return seen[0]


def test_the_middleware_sets_the_client_and_scheme_and_leaves_the_socket_peer_without_the_header() -> None:
    spoofed = [(b"x-forwarded-for", b"1.2.3.4, 203.0.113.9, 35.191.0.1"), (b"x-forwarded-proto", b"https")]
    scope = _seen(2, spoofed)
    assert (scope["client"], scope["scheme"]) == (("203.0.113.9", 0), "https")
    assert _seen(2, [])["client"] == ("169.254.1.1", 40000)
    assert _seen(0, spoofed)["client"] == ("169.254.1.1", 40000)


def test_a_process_not_told_its_front_end_trusts_no_forwarded_entry() -> None:
    """Only the Pulumi program knows whether a load balancer sits in front; without it, 1 would trust a client."""
    assert Settings.model_validate(OFFLINE_ENV).TRUSTED_PROXY_HOPS == 0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # same subscriber, same allowance
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("unknown", "unknown"),
    ],
)
def test_the_login_limit_counts_an_ipv6_client_by_its_64(address: str, key: str) -> None:
    assert address_key(address) == key
