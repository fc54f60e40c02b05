"""The status page (``GET /``) in a real headless Chromium, at a phone's width.

Requests are made with the ``openai`` SDK through the gateway to strict OpenAI fakes
(one falling over to the second target); the page must show them, and a request made
after it loaded must appear without a reload (it polls ``/status.json``). A screenshot is
kept as a test artifact: ``tests/artifacts/status-page.png`` (gitignored).
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import openai

from batuta.gateway.status import page
from batuta.runtime.state import ServerRecord, State, write_state
from tests.fakes.openai_server import OpenAIFake
from tests.gateway.chromium import Chromium
from tests.gateway.helpers import GatewayThread, local, route_of, write_routes
from tests.runtime.test_state import _spec

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
HI = [{"role": "user", "content": "Hi"}]
ROWS = "[...document.querySelectorAll('#requests tbody tr')].map(r => r.innerText)"


def test_the_page_has_no_external_asset() -> None:
    html = page().decode()
    assert "<script>" in html and "<style>" in html  # inline
    assert not re.search(r"""(src|href)\s*=|https?://|@import|url\(""", html)


def test_status_page_in_chromium_shows_live_requests(tmp_path: Path) -> None:
    up = ServerRecord(_spec("smollm2"), state="ready", pid=os.getpid(), restarts=1)
    write_state(tmp_path, State(servers={"smollm2": up}))
    with OpenAIFake() as a, OpenAIFake() as b:
        table = write_routes(tmp_path, route_of("default", local("primary", a), local("spare", b)))
        with GatewayThread(table) as gw:
            sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
            sdk.chat.completions.create(model="default", messages=HI)
            a.fail_next(503)
            sdk.chat.completions.create(model="default", messages=HI)
            asyncio.run(_browse(gw, sdk, tmp_path))


async def _browse(gw: GatewayThread, sdk: openai.OpenAI, tmp_path: Path) -> None:
    async with Chromium(tmp_path / "profile") as browser:
        await browser.navigate(gw.url + "/")
        rows = await browser.wait_for(f"{ROWS}.length >= 2 && {ROWS}")
        newest, older = rows[0], rows[1]
        assert "spare" in newest and "primary (overloaded) → spare" in newest and "200" in newest
        assert "primary" in older
        servers = await browser.evaluate("document.querySelector('#servers tbody').innerText")
        assert "smollm2" in servers and "ready" in servers and str(os.getpid()) in servers
        assert "MiB" in servers  # the memory of a pid that is still the one recorded
        routes = await browser.evaluate("document.querySelector('#routes tbody').innerText")
        assert "primary" in routes and "spare" in routes and "closed" in routes
        # live: a request made now shows up without a reload
        await asyncio.to_thread(
            sdk.chat.completions.create, model="spare", messages=HI, max_tokens=3
        )
        rows = await browser.wait_for(f"{ROWS}.length >= 3 && {ROWS}")
        assert rows[0].split("\t")[2:5] == ["spare", "spare", "200"]  # route, target, status
        width = await browser.evaluate("document.documentElement.scrollWidth")
        assert width <= 412, "the page scrolls sideways on a phone"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = await browser.screenshot(ARTIFACTS / "status-page.png")
        assert shot.stat().st_size > 10_000
        (tmp_path / "status-page.png").write_bytes(shot.read_bytes())
