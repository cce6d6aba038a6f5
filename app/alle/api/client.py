"""The browser client (`alle/web/`) served by `alle web` on the API's own origin, so a release stays one image.

Asset names carry a hash of their bytes, computed once at start: they are cached for a year and a new release
gets new names. The entry page is never cached and carries a strict Content-Security-Policy (no inline script).
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.middleware.cors import CORSMiddleware

from alle.config import Settings

STATIC = files("alle").joinpath("web")
MEDIA_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
HTML_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
ASSET_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
    "Vary": "Accept-Encoding",
}
#: What a separately hosted client sends and reads (CORS_ORIGIN); bearer tokens, so no cookies are allowed.
CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key"]
CORS_EXPOSED = ["Content-Disposition", "Idempotent-Replayed", "Location"]


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str


@dataclass(frozen=True)
class Bundle:
    index: bytes
    assets: dict[str, Asset]


def load_bundle() -> Bundle:
    """Hash every asset and point the entry page at the hashed names; a reference to a missing asset fails here."""
    index = STATIC.joinpath("index.html").read_text(encoding="utf-8")
    assets: dict[str, Asset] = {}
    for entry in sorted(STATIC.iterdir(), key=lambda item: item.name):
        stem, _, extension = entry.name.rpartition(".")
        if extension not in MEDIA_TYPES:
            continue
        body = entry.read_bytes()
        hashed = f"{stem}.{hashlib.sha256(body).hexdigest()[:16]}.{extension}"
        assets[hashed] = Asset(body, gzip.compress(body, compresslevel=9, mtime=0), MEDIA_TYPES[extension])
        index = index.replace(f'"/assets/{entry.name}"', f'"/assets/{hashed}"')
    unhashed = [name for name in re.findall(r'"/assets/([^"]+)"', index) if name not in assets]
    if unhashed:
        raise RuntimeError(f"alle/web/index.html references {unhashed}, which are not in alle/web/; add or fix them.")
    return Bundle(index.encode(), assets)


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the client at `/` and `/assets/*`; answer CORS only for the origins CORS_ORIGIN names."""
    bundle = load_bundle()
    if settings.CORS_ORIGIN:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGIN,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSED,
            max_age=600,
        )

    async def index() -> Response:
        return Response(bundle.index, media_type="text/html; charset=utf-8", headers=HTML_HEADERS)

    async def asset(name: str, request: Request) -> Response:
        found = bundle.assets.get(name)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "No such asset in this release; reload the page.")
        if _accepts_gzip(request):
            return Response(
                found.gzipped, media_type=found.media_type, headers={**ASSET_HEADERS, "Content-Encoding": "gzip"}
            )
        return Response(found.body, media_type=found.media_type, headers=ASSET_HEADERS)

    app.add_api_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/assets/{name}", asset, methods=["GET", "HEAD"], include_in_schema=False)
