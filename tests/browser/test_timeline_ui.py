"""The page's live timeline chart and its CSV / JSON downloads, in a real Chromium.

Same set-up as test_browser.py (its fixtures and helpers are reused): an in-process server with
the deterministic fake classifier (always "happy" 94%) and a fake camera playing FER2013 faces.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from tests.browser import test_browser as tb
from tests.browser.test_browser import (
    CHROMIUM,
    LABELS,
    open_page,
    state,
    sync_api,
    wait_results,
)

# The fixtures of test_browser.py, shared by name (pytest finds them in this module's namespace).
browser, face_video, page = tb.browser, tb.face_video, tb.page
token_server = tb.token_server  # ("server" comes from conftest.py)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found"),
    pytest.mark.timeout(120),
]

CSV_HEADER = "face_id,second,n," + ",".join(LABELS)
#: The page's timeline poll interval (client/timeline.js POLL_MS).
POLL_MS = 2000

# Pixels of the timeline canvas drawn in the "happy" line's colour (#ffd54f, labels.js): the fake
# classifier says happy 94%, so that line must be on the chart. Tolerant of antialiasing.
HAPPY_PIXELS_JS = """() => {
  const c = document.getElementById('timeline-chart');
  if (!c || !c.width || !c.height) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 200 && Math.abs(d[i] - 0xff) < 24 && Math.abs(d[i + 1] - 0xd5) < 24
        && Math.abs(d[i + 2] - 0x4f) < 24) n++;
  }
  return n;
}"""


def timeline(page) -> dict:
    return page.evaluate("() => window.facedapps.timeline")


def wait_points(page, n: int, timeout_ms: int = 20_000) -> dict:
    try:
        page.wait_for_function(
            "(n) => window.facedapps.state === 'error' || window.facedapps.timeline.points >= n",
            arg=n, timeout=timeout_ms)
    except sync_api.TimeoutError:
        raise AssertionError(f"timeline never reached {n} points: {timeline(page)}, page state "
                             f"{state(page)['state']} error={state(page)['error']!r}") from None
    assert state(page)["state"] == "running", state(page)["error"]
    return timeline(page)


def download(page, button: str, tmp_path) -> tuple[str, str]:
    """Click ``button``, wait (bounded) for the download; returns (suggested name, text)."""
    with page.expect_download(timeout=10_000) as info:
        page.click(button)
    dl = info.value
    path = tmp_path / dl.suggested_filename
    dl.save_as(str(path))
    return dl.suggested_filename, path.read_text()


def start_charting(page, url: str) -> tuple[str, dict]:
    """Open the page, start over WebRTC, wait (bounded) for a chart of 2 points; returns
    (session id, timeline state)."""
    open_page(page, url)
    page.click("#start")
    wait_results(page, 5, "webrtc")
    session = state(page)["session"]
    assert isinstance(session, str) and session
    return session, wait_points(page, 2)


@pytest.fixture
def charted(server, page) -> tuple:
    """The page running over WebRTC with a chart of at least 2 points: (page, session, tl)."""
    session, tl = start_charting(page, server + "/")
    return page, session, tl


def shots_folder(tmp_path) -> Path:
    shots = os.environ.get("FACEDAPPS_TIMELINE_SHOTS")  # a folder to keep the pictures in
    folder = Path(shots) if shots else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def settle(page) -> None:
    """Wait for a round trip to the server from the page: requests that the page's timers
    started before it have been issued (and reported to the test) by the time it returns."""
    assert page.evaluate("async () => (await fetch('/healthz', {cache: 'no-store'})).ok")


def test_downloads_are_enabled_only_with_a_live_session(server, page):
    open_page(page, server + "/")
    # No live session: nothing to download.
    assert not page.is_enabled("#timeline-csv") and not page.is_enabled("#timeline-json")
    assert timeline(page)["points"] == 0
    page.click("#start")
    wait_results(page, 3, "webrtc")
    assert page.is_enabled("#timeline-csv") and page.is_enabled("#timeline-json")
    page.click("#stop")
    assert page.errors == []


def test_timeline_chart_draws_the_face(charted, tmp_path):
    page, session, tl = charted
    assert tl["faceIds"], tl
    assert tl["face"] in tl["faceIds"], tl
    assert tl["polls"] >= 1 and tl["error"] is None, tl
    happy = page.evaluate(HAPPY_PIXELS_JS)
    # Two seconds of a 60 s axis make a short segment (~11 px at this viewport).
    assert happy >= 6, f"the happy line is not drawn ({happy} pixels)"
    # The face select lists the face ids present.
    options = page.eval_on_selector_all("#timeline-face option", "os => os.map(o => o.value)")
    assert options[0] == "auto" and [int(v) for v in options[1:]] == sorted(tl["faceIds"])
    # Pictures for people (not compared): a screenshot captures a freshly rendered frame.
    folder = shots_folder(tmp_path)
    page.locator("#timeline").screenshot(path=str(folder / "timeline.png"))
    page.screenshot(path=str(folder / "page.png"))
    assert page.errors == []


def test_timeline_csv_download(charted, tmp_path):
    """Header and rows of a face id present on the chart."""
    page, session, tl = charted
    name, text = download(page, "#timeline-csv", tmp_path)
    assert name == f"timeline-{session}.csv"
    lines = text.splitlines()
    assert lines[0] == CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows, text
    ids = {int(r["face_id"]) for r in rows}
    assert ids & set(tl["faceIds"]), (ids, tl["faceIds"])
    for r in rows:
        assert int(r["n"]) >= 1 and int(r["second"]) >= 0
        assert abs(sum(float(r[label]) for label in LABELS) - 1.0) < 0.01, r
    assert max(float(r["happy"]) for r in rows) > 0.9
    assert page.errors == []


def test_timeline_json_download(charted, tmp_path):
    """The labels in order, and per-second records of the face ids."""
    page, session, tl = charted
    name, text = download(page, "#timeline-json", tmp_path)
    assert name == f"timeline-{session}.json"
    data = json.loads(text)
    assert data["labels"] == LABELS
    assert data["faces"], data
    assert {int(k) for k in data["faces"]} & set(tl["faceIds"])
    for recs in data["faces"].values():
        for rec in recs:
            assert len(rec["probs"]) == len(LABELS) and rec["n"] >= 1 and rec["t"] >= 0
    assert page.errors == []


def test_stop_ends_polling_and_keeps_the_timeline_downloadable(server, page):
    """Stop: polling stops, no request is left in flight, and no poll happens later (checked on
    the page's own clock, not by waiting); the session's timeline still downloads, built from
    the page's copy (the server forgets an ended session)."""
    page.clock.install()  # the page's timers run as usual until the test moves the clock
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/timeline.json" in r.url else None)
    start_charting(page, server + "/")
    page.click("#stop")
    page.wait_for_function("() => window.facedapps.state === 'idle'", timeout=5_000)
    tl = timeline(page)
    assert tl["polling"] is False and tl["inFlight"] is False and tl["session"] is None, tl
    polls, sent = tl["polls"], len(requests)
    page.clock.run_for(3 * POLL_MS)  # three poll intervals at once: a leftover poll fires now
    settle(page)
    assert timeline(page)["polls"] == polls, "polling went on after Stop"
    assert len(requests) == sent, requests[sent:]
    assert page.is_enabled("#timeline-csv") and page.is_enabled("#timeline-json")
    with page.expect_download() as got:
        page.click("#timeline-csv")
    rows = Path(got.value.path()).read_text().splitlines()
    assert rows[0].startswith("face_id,second,n,angry") and len(rows) > 1, rows[:3]
    assert len(requests) == sent  # from the page's copy, not the server
    assert page.errors == []


def test_timeline_polls_one_request_at_a_time(server, page):
    """While a timeline request is unanswered, no second one is sent; polling resumes after."""
    held = []
    page.clock.install()  # the page's timers run as usual until the test moves the clock
    open_page(page, server + "/")
    page.route("**/api/sessions/*/timeline.json*", lambda route: held.append(route))
    page.click("#start")
    wait_results(page, 3, "webrtc")
    page.wait_for_function("() => window.facedapps.timeline.inFlight === true", timeout=10_000)
    page.clock.run_for(POLL_MS * 5 // 2)  # two and a half poll intervals, at once
    settle(page)
    assert len(held) == 1, f"{len(held)} timeline requests in flight at once"
    held[0].continue_()
    page.unroute("**/api/sessions/*/timeline.json*")  # later polls go straight through
    page.wait_for_function("() => window.facedapps.timeline.polls >= 2", timeout=10_000)
    page.click("#stop")
    assert page.errors == []


def synthetic_timeline() -> dict:
    """Face 3 seen for 100 s (a slow happy/sad swing), face 7 for the last 10 with a gap."""
    import math

    def probs(i: int) -> list[float]:
        h = 0.5 + 0.4 * math.sin(i / 8)
        return [0.02, 0.02, 0.02, round(h, 4), round(0.9 - h, 4), 0.02, 0.02]

    return {"labels": LABELS, "start": 1_700_000_000.0, "faces": {
        "3": [{"t": t, "n": 15, "probs": probs(t)} for t in range(100)],
        "7": [{"t": t, "n": 15, "probs": probs(t + 40)} for t in range(90, 100) if t != 94],
    }}


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
def test_timeline_window_and_face_select(server, page, tmp_path, transport):
    """The last 60 s of the chosen face are plotted; the select lists the faces present.
    Over the WebSocket too (there the session id comes in the socket's hello message)."""
    open_page(page, server + f"/?transport={transport}")
    page.route("**/api/sessions/*/timeline.json*",
               lambda route: route.fulfill(json=synthetic_timeline()))
    page.click("#start")
    wait_results(page, 3, transport)
    assert page.is_enabled("#timeline-csv") and page.is_enabled("#timeline-json")
    page.wait_for_function("() => window.facedapps.timeline.polls >= 1", timeout=10_000)
    tl = timeline(page)
    assert tl["faceIds"] == [3, 7], tl
    assert tl["face"] == 3 and tl["points"] == 60, tl  # seconds 40..99 of the longest face
    options = page.eval_on_selector_all("#timeline-face option", "os => os.map(o => o.value)")
    assert options == ["auto", "3", "7"]
    page.select_option("#timeline-face", "7")
    tl = timeline(page)
    assert tl["face"] == 7 and tl["points"] == 9, tl
    assert page.evaluate(HAPPY_PIXELS_JS) > 20
    folder = shots_folder(tmp_path)
    page.locator("#timeline").screenshot(path=str(folder / "timeline-face7.png"))
    page.select_option("#timeline-face", "auto")
    assert timeline(page)["face"] == 3
    page.locator("#timeline").screenshot(path=str(folder / "timeline-synthetic.png"))
    page.click("#stop")
    assert page.errors == []


def test_timeline_requests_carry_the_token(token_server, page, tmp_path):
    urls = []
    page.on("request", lambda r: urls.append(r.url) if "/api/sessions/" in r.url else None)
    open_page(page, token_server + "/?token=s3cret-token")
    page.click("#start")
    wait_results(page, 3, "webrtc")
    page.wait_for_function("() => window.facedapps.timeline.polls >= 1", timeout=10_000)
    name, text = download(page, "#timeline-csv", tmp_path)
    assert text.splitlines()[0] == CSV_HEADER
    assert any("/timeline.json" in u for u in urls) and any("/timeline.csv" in u for u in urls)
    assert all("token=s3cret-token" in u for u in urls), urls
    page.click("#stop")
    assert page.errors == []
