"""The web client as `alle web` serves it: hashed, cached assets; a strict, never-cached entry page; opt-in CORS."""

from __future__ import annotations

import gzip
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from alle.api import client
from alle.api.app import create_app
from alle.config import Settings
from conftest import OFFLINE_ENV

WEB = Path(client.__file__).resolve().parent.parent / "web"


def http(**env: str) -> TestClient:
    """In process, without the lifespan: serving the client touches no backing service."""
    return TestClient(create_app(Settings(**{**OFFLINE_ENV, **env})))  # type: ignore[arg-type]


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.handler_attributes: list[str] = []
        self.style_attributes: list[str] = []
        self.assets: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.handler_attributes += [name for name, _ in attrs if name.startswith("on")]
        self.style_attributes += [name for name, _ in attrs if name == "style"]
        if tag == "script":
            self.scripts.append(found)
            self._in_script = True
        self.assets += [v for k, v in attrs if k in ("src", "href") and v and v.startswith("/assets/")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        self.inline_script = self.inline_script or (self._in_script and bool(data.strip()))


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_entry_page_has_strict_csp_no_inline_script_and_framing_and_referrer_headers() -> None:
    response = http().get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-cache"
    page = parse(response.text)
    assert page.scripts and all(script.get("src") for script in page.scripts)
    assert not page.inline_script and not page.handler_attributes and not page.style_attributes


def test_assets_are_named_by_content_hash_and_cached_for_a_year() -> None:
    web = http()
    assets = parse(web.get("/").text).assets
    assert {Path(a).suffix for a in assets} == {".js", ".css"}
    for path in assets:
        stem, digest, extension = Path(path).name.split(".")
        source = (WEB / f"{stem}.{extension}").read_bytes()
        assert digest == hashlib.sha256(source).hexdigest()[:16]
        response = web.get(path, headers={"Accept-Encoding": "identity"})
        assert response.status_code == 200
        assert response.content == source
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert web.get(f"/assets/{stem}.{extension}").status_code == 404


def test_assets_are_sent_gzipped_when_accepted_and_plain_when_refused() -> None:
    web = http()
    script = next(a for a in parse(web.get("/").text).assets if a.endswith(".js"))
    compressed = web.get(script, headers={"Accept-Encoding": "gzip, br"})
    assert compressed.headers["content-encoding"] == "gzip"
    refused = web.get(script, headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    assert compressed.content == refused.content  # httpx decodes the gzip body


def test_client_ships_under_100_kb_of_compressed_script() -> None:
    scripts = [p.read_bytes() for p in WEB.glob("*.js")]
    assert scripts
    assert sum(len(gzip.compress(body, 9)) for body in scripts) <= 100 * 1024


def test_client_script_never_writes_html_from_strings() -> None:
    """Text from the API goes into textContent; innerHTML and friends would make it markup."""
    for path in WEB.glob("*.js"):
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", path.read_text())


def test_a_reference_to_a_missing_asset_stops_the_web_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "index.html").write_text('<script type="module" src="/assets/app.js"></script>')
    monkeypatch.setattr(client, "STATIC", tmp_path)
    with pytest.raises(RuntimeError, match=r"references \['app.js'\]"):
        client.load_bundle()


def test_no_cors_headers_unless_cors_origin_is_set() -> None:
    preflight = {
        "Origin": "https://alle.app",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
    }
    assert "access-control-allow-origin" not in http().options("/v1/tasks", headers=preflight).headers
    web = http(CORS_ORIGIN="https://alle.app, http://localhost:3000")
    allowed = web.options("/v1/tasks", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://alle.app"
    assert "idempotency-key" in allowed.headers["access-control-allow-headers"].lower()
    other = web.options("/v1/tasks", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_origin_is_a_comma_separated_list_of_origins_empty_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(**OFFLINE_ENV).CORS_ORIGIN == []  # type: ignore[arg-type]
    monkeypatch.setenv("CORS_ORIGIN", "https://alle.app/, http://localhost:3000")
    assert Settings(**OFFLINE_ENV).CORS_ORIGIN == ["https://alle.app", "http://localhost:3000"]  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings(**{**OFFLINE_ENV, "CORS_ORIGIN": "https://alle.app/app"})  # type: ignore[arg-type]


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(foreground: str, background: str) -> float:
    """WCAG 2.1 contrast ratio of two #rrggbb colours."""
    light, dark = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_colours_meet_wcag_aa_contrast() -> None:
    css = (WEB / "app.css").read_text()
    colour = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", css))
    colour["white"] = "#ffffff"
    text = [
        ("ink", "paper"),
        ("ink", "wash"),
        ("muted", "paper"),
        ("muted", "wash"),
        ("accent", "paper"),
        ("accent", "wash"),
        ("danger", "paper"),
        ("white", "accent"),
        ("white", "accent-dark"),
    ]
    for foreground, background in text:
        assert contrast(colour[foreground], colour[background]) >= 4.5, (foreground, background)
    for component in ("line", "accent", "danger"):  # borders, focus ring: non-text contrast
        assert contrast(colour[component], colour["paper"]) >= 3, component
    badges = re.findall(r"\.badge-\w+ \{ background: (#[0-9a-f]{6}); color: (#[0-9a-f]{6}); \}", css)
    assert len(badges) == 3
    for background, foreground in badges:
        assert contrast(foreground, background) >= 4.5, (foreground, background)
