"""ASGI middleware: one structured access-log line per request, with trace correlation for every log line."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alle.logs import get_logger, parse_trace, trace_context

log = get_logger("alle.access")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, project: str | None) -> None:
        self.app = app
        self.project = project

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        token = trace_context.set(parse_trace(headers, self.project))
        started = time.perf_counter()
        status = 500
        size = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            path = scope["path"] + (f"?{query}" if query else "")
            client = scope.get("client")
            log.info(
                f"{scope['method']} {scope['path']} {status}",
                httpRequest={
                    "requestMethod": scope["method"],
                    "requestUrl": path,
                    "status": status,
                    "responseSize": str(size),
                    "userAgent": headers.get("user-agent", ""),
                    "remoteIp": headers.get("x-forwarded-for", client[0] if client else ""),
                    "latency": f"{time.perf_counter() - started:.6f}s",
                    "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
                },
            )
            trace_context.reset(token)
