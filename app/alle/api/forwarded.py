"""The client's address: counted from the right of X-Forwarded-For, where only our own front ends write.

Google's front ends append to X-Forwarded-For and pass on whatever the client sent before their entries:
- Cloud Run at its run.app URL: the front end appends the address the request came from, so the header ends in
  `<client-ip>` (TRUSTED_PROXY_HOPS=1).
- Behind the external Application Load Balancer (components/edge.py, serverless NEG) it ends in
  `<client-ip>,<load-balancer-ip>`; the load balancer "does not verify any IP addresses that precede" those two
  (https://cloud.google.com/load-balancing/docs/https, "X-Forwarded-For header") (TRUSTED_PROXY_HOPS=2).

So the client is the TRUSTED_PROXY_HOPS-th entry from the right. Everything left of it is what the client chose to
write, and uvicorn's `forwarded_allow_ips="*"` took the leftmost: one header per attempt dodged the per-address
log-in limit. A header with fewer entries than our front ends append did not come through them, and a malformed
entry is not an address: then the socket peer stands. TRUSTED_PROXY_HOPS=0 ignores the header (a process
reached directly, as in the tests). X-Forwarded-Proto, which the same front ends set, gives the scheme.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

_SCHEMES = frozenset({"http", "https"})


def client_address(forwarded_for: list[str], hops: int) -> str | None:
    """The entry `hops` from the right of the X-Forwarded-For values (in the order received), if it is an address."""
    entries = [entry.strip() for value in forwarded_for for entry in value.split(",")]
    if hops < 1 or len(entries) < hops:
        return None
    candidate = entries[-hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


class ForwardedClient:
    """Pure ASGI middleware: sets `scope["client"]` and `scope["scheme"]` from the front ends' headers."""

    def __init__(self, app: ASGIApp, hops: int) -> None:
        self.app = app
        self.hops = hops

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hops:
            forwarded_for: list[str] = []
            proto = ""
            for name, value in scope["headers"]:
                if name == b"x-forwarded-for":
                    forwarded_for.append(value.decode("latin-1"))
                elif name == b"x-forwarded-proto":
                    proto = value.decode("latin-1").rsplit(",", 1)[-1].strip().lower()
            address = client_address(forwarded_for, self.hops)
            if address is not None or proto in _SCHEMES:
                scope = dict(scope)
                if address is not None:
                    scope["client"] = (address, 0)
                if proto in _SCHEMES:
                    scope["scheme"] = proto
        await self.app(scope, receive, send)
