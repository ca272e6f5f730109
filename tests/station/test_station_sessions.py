"""Sessions that expire (issue 17 item 5), as docs/station.md says: a session ends
``station.session_ttl_s`` after sign-in, however active the operator was (no sliding expiry).

With a TTL of a few seconds: an idle session and an active one (a request every 0.4 s) both end
at sign-in + TTL, not later and not earlier; then the line view goes to the sign-in page saying
why; an entry posted with the old session cookie and its CSRF token is refused with a message
and sends nothing (Kafka end offsets unchanged); and a line view left open in Chromium leaves
for the sign-in page by itself (its live stream ends with the session).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from plantstream.schemas.config import PlantConfig, build_config
from tests.station.conftest import PINS, Served, plant_dict, sign_in
from tests.station.test_station_refusals import client_for, csrf, refused

pytestmark = pytest.mark.integration

TTL = 4.0


@pytest.fixture
def plant(hashes: tuple[dict[str, str], str]) -> PlantConfig:
    """The tests' plant with sessions of ``TTL`` seconds."""
    data = plant_dict(*hashes)
    data["station"]["session_ttl_s"] = TTL
    return build_config(data, {})


def signed_in(s: Served, operator: str = "op-ana") -> tuple[httpx.Client, str, float, float]:
    """A client signed in as ``operator``, its CSRF token, and the monotonic times just before
    and just after the sign-in request (the session ends TTL after a moment between them)."""
    c = httpx.Client(base_url=s.url, follow_redirects=True, timeout=20)
    form = {"csrf": csrf(c.get("/signin").text), "operator": operator, "secret": PINS[operator]}
    t0 = time.monotonic()
    r = c.post("/signin", data=form)
    t1 = time.monotonic()
    assert r.status_code == 200 and "Sign out" in r.text, r.text[:500]
    return c, csrf(r.text), t0, t1


def on_signin_page(r: httpx.Response) -> bool:
    return r.url.path == "/signin" and 'id="signin"' in r.text


def post_with(s: Served, cookies: httpx.Cookies, path: str, data: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=s.url, cookies=cookies, timeout=20) as old:
        return old.post(path, data=data)


def test_an_idle_session_ends_ttl_after_sign_in_and_its_entry_is_refused(served_station: Served) -> None:
    s = served_station
    c, token, _, t1 = signed_in(s)
    cookies = httpx.Cookies(c.cookies)  # the session cookie as sign-in set it
    stop = f"/machine/press-01/stop/{s.seeded.unexplained}"
    before = s.end_offsets()
    time.sleep(max(0.0, t1 + TTL + 0.1 - time.monotonic()))
    r = post_with(s, cookies, stop + "/reason", {"csrf": token, "code": "jam"})
    refused(r, 401, "your session has ended (a session lasts 4 s after sign-in)")
    assert "sign in again" in r.text and 'href="/signin"' in r.text
    r = c.get("/line/line-1")
    assert on_signin_page(r) and "session has expired" in r.text, (r.url, r.text[:400])
    for path in ("/line/line-1/machines", "/line/line-1/events", "/machine/press-01/stops"):
        with httpx.Client(base_url=s.url, cookies=cookies, timeout=20) as old:
            assert old.get(path).status_code == 401, path
    assert s.end_offsets() == before
    assert 'plantstream_station_entries_refused_total{reason="session"} 1' in c.get("/metrics").text


def test_an_active_session_ends_ttl_after_sign_in_too(served_station: Served) -> None:
    s = served_station
    c, token, t0, t1 = signed_in(s)
    stop = f"/machine/press-01/stop/{s.seeded.unexplained}"
    last_cookies = httpx.Cookies(c.cookies)
    ended_at = None
    while time.monotonic() - t1 < TTL + 3:
        sent = time.monotonic()
        r = c.get("/line/line-1")
        if on_signin_page(r):
            ended_at = sent
            break
        assert r.status_code == 200 and r.url.path == "/line/line-1", r.text[:300]
        assert sent < t1 + TTL, "a request after the session's end was answered as signed in"
        last_cookies = httpx.Cookies(c.cookies)  # refreshed by every response
        time.sleep(0.4)
    # Not slid by the requests (else it would not end while they go on), not cut short either.
    assert ended_at is not None, "the session did not end although it is older than its TTL"
    assert ended_at >= t0 + TTL, f"ended {ended_at - t0:.2f} s after sign-in, before the TTL"
    assert "session has expired" in r.text
    before = s.end_offsets()
    # The newest cookie of the session (signed 0.4 s before its end) and its token: refused.
    r = post_with(s, last_cookies, stop + "/reason", {"csrf": token, "code": "jam"})
    refused(r, 401, "your session has ended")
    r = post_with(s, last_cookies, "/machine/press-01/scrap", {"csrf": token, "quantity": "3", "reason": "burr"})
    refused(r, 401, "your session has ended")
    assert s.end_offsets() == before
    # Signing in again starts a new session that works.
    c2, _ = client_for(s, "op-ana")
    assert c2.get("/line/line-1").url.path == "/line/line-1"


def test_open_pages_go_to_sign_in_when_the_session_ends(
    served_station: Served, page: Any, chromium: Any
) -> None:
    """The line view (server-sent events) and a stop (polled) left open on two tablets."""
    s = served_station
    other = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        stop = other.new_page()
        t0 = time.monotonic()
        sign_in(page, s.url, "op-ana", PINS["op-ana"])
        sign_in(stop, s.url, "op-ben", PINS["op-ben"])
        assert page.url.endswith("/line/line-1")
        page.wait_for_selector("#machines[data-updated]")  # the live stream is on
        stop.goto(f"{s.url}/machine/press-01/stop/{s.seeded.unexplained}")
        assert "/stop/" in stop.url
        for p in (page, stop):
            p.wait_for_url("**/signin", timeout=int((TTL + 6) * 1000))
            assert time.monotonic() - t0 >= TTL  # t0 is before sign-in
            assert "session has expired" in p.locator("#flash").inner_text()
    finally:
        other.close()
