"""The page's "Analyse a photo or video" panel in a real Chromium (client/analyzer.js).

A photo and a short H264 video are made in the test (real FER2013 faces on grey), chosen with
the file input, and sent to the in-process server with the deterministic fake classifier (it
always says happy 94%), so these tests check the page and the routes, not the model. Every wait
is bounded (Playwright's wait_for_function); nothing sleeps blindly.
"""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.browser.test_browser import (
    CANVAS_PIXELS_JS,
    CHROMIUM,
    page_in_context,
    serve_in_thread,
)
from tests.browser.test_browser import open_page as open_camera_page
from tests.helpers import HAPPY, write_video

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found: install it with "
                                               "`apt-get install -y chromium` (Debian)"),
    pytest.mark.timeout(180),
]

sync_api = pytest.importorskip("playwright.sync_api")
av = pytest.importorskip("av")

from bench.face_video import face_frame  # noqa: E402

TOKEN = "s3cret-token"

# Counts the upload progress events of every XMLHttpRequest the page sends.
COUNT_UPLOAD_PROGRESS_JS = """(() => {
  window.__uploadProgress = 0;
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (body) {
    this.upload.addEventListener('progress', () => { window.__uploadProgress += 1; });
    return send.call(this, body);
  };
})();"""


def write_photo(path: Path) -> Path:
    """Two real faces side by side (1280x480), as PNG."""
    left, _ = face_frame(HAPPY, x=160, y=120, side=220)
    right, _ = face_frame(HAPPY + 1, x=220, y=140, side=200)
    assert cv2.imwrite(str(path), np.hstack([left, right]))
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            # A fake camera (a test pattern without faces) for the camera-and-upload test.
            args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--autoplay-policy=no-user-gesture-required"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    yield from page_in_context(browser, 1200, 900)


@pytest.fixture
def token_server(tmp_path, fake_classifier):
    yield from serve_in_thread(tmp_path, fake_classifier, access_token=TOKEN)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    (d / "notes.mp4").write_text("this is a text file, not a video\n")
    (d / "fake.png").write_text("not a PNG either\n")
    (d / "notes.txt").write_text("plain text\n")
    return {"photo": write_photo(d / "two-faces.png"), "video": write_video(d / "clip.mp4"),
            "bad_video": d / "notes.mp4", "bad_photo": d / "fake.png", "text": d / "notes.txt"}


def analysis(page) -> dict:
    return page.evaluate("() => window.facedapps.analysis")


def open_page(page, url: str) -> None:
    open_camera_page(page, url)  # loaded, config in, camera idle
    assert analysis(page)["phase"] == "idle"
    assert page.is_disabled("#analyze-clear")
    privacy = page.inner_text("#privacy")
    assert "never stored on disk" in privacy and "at most 10 minutes" in privacy


def wait_phase(page, phases: tuple[str, ...], timeout_ms: int = 60_000) -> dict:
    """Wait (bounded) until the panel reaches one of ``phases``; its state."""
    try:
        page.wait_for_function("(ps) => ps.includes(window.facedapps.analysis.phase)",
                               arg=list(phases), timeout=timeout_ms)
    except sync_api.TimeoutError:
        raise AssertionError(f"panel not in {phases} after {timeout_ms} ms: "
                             f"{analysis(page)!r}") from None
    return analysis(page)


def job_status(base: str, job: str, token: str | None = None) -> int:
    """HTTP status of GET /api/jobs/{job} from outside the page."""
    url = f"{base}/api/jobs/{job}" + (f"?token={token}" if token else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_gone(base: str, job: str, token: str | None = None, timeout_s: float = 10.0) -> None:
    """Bounded wait until the server answers 404 for the job (the DELETE may be in flight)."""
    end = time.monotonic() + timeout_s
    while (status := job_status(base, job, token)) != 404:
        assert time.monotonic() < end, f"job {job} still there (HTTP {status})"
        time.sleep(0.1)


def check_photo(page) -> None:
    s = wait_phase(page, ("done", "error"), 30_000)
    assert s["phase"] == "done", s
    assert s["kind"] == "photo" and [f["label"] for f in s["faces"]] == ["happy", "happy"]
    items = page.locator("#photo-faces li").all_inner_texts()
    assert items == ["Face 1: happy 94%", "Face 2: happy 94%"], items
    assert page.is_visible("#photo") and page.is_visible("#photo-overlay")
    assert page.evaluate("() => document.getElementById('photo').naturalWidth") == 1280
    # Both boxes and labels are drawn over the photo at once.
    assert page.evaluate(CANVAS_PIXELS_JS, "photo-overlay") > 500
    assert "2 faces found" in page.inner_text("#analyze-status")
    assert page.is_enabled("#analyze-clear")


def test_a_photo_shows_every_face_with_its_label(server, page, files):
    open_page(page, server + "/")
    page.set_input_files("#analyze-file", str(files["photo"]))
    check_photo(page)
    assert page.get_attribute("#analyze-status", "aria-live") == "polite"
    page.click("#analyze-clear")
    assert wait_phase(page, ("idle",), 5_000)["faces"] == []
    assert not page.is_visible("#analysis")
    assert page.evaluate(CANVAS_PIXELS_JS, "photo-overlay") == 0
    assert page.errors == []


def test_a_photo_dropped_on_the_zone_is_analysed(server, page, files):
    open_page(page, server + "/")
    data = base64.b64encode(files["photo"].read_bytes()).decode()
    over = page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
        const zone = document.getElementById('analyze-drop');
        const ev = (type) => new DragEvent(type, { dataTransfer: dt, bubbles: true,
                                                   cancelable: true });
        zone.dispatchEvent(ev('dragover'));
        const over = zone.classList.contains('over');
        zone.dispatchEvent(ev('drop'));
        return over; }""", data)
    assert over, "the zone shows that it takes the file"
    check_photo(page)
    assert "dropped.png" in page.inner_text("#analysis-name")
    assert page.errors == []


@pytest.mark.parametrize("with_token", [False, True], ids=["open", "token"])
def test_a_video_is_uploaded_analysed_shown_and_cleared(request, page, files, with_token):
    base = request.getfixturevalue("token_server" if with_token else "server")
    token = TOKEN if with_token else None
    page.add_init_script(COUNT_UPLOAD_PROGRESS_JS)
    open_page(page, base + (f"/?token={TOKEN}" if with_token else "/"))
    assert page.get_attribute("#upload-progress", "max") == "1"
    page.set_input_files("#analyze-file", str(files["video"]))
    s = wait_phase(page, ("done", "failed", "error"))
    assert s["phase"] == "done", s
    job = s["job"]
    assert s["kind"] == "video" and s["upload"] == 1 and s["progress"] == 1 and s["polls"] >= 1
    assert s["summary"]["frames_analysed"] == 18
    # The upload reported progress to the page (the bar follows these events).
    assert page.evaluate("() => window.__uploadProgress") >= 1
    assert "is analysed" in page.inner_text("#analyze-status")
    assert not page.is_visible("#job-row") and not page.is_visible("#upload-row")

    # The annotated video loads and plays in the page.
    src = page.get_attribute("#job-video", "src")
    suffix = f"?token={TOKEN}" if with_token else ""
    assert src == f"/api/jobs/{job}/annotated.mp4{suffix}", src
    page.wait_for_function(
        "() => { const v = document.getElementById('job-video');"
        "        return v.readyState >= 1 || v.error !== null; }", timeout=20_000)
    assert page.evaluate("() => document.getElementById('job-video').error") is None
    assert page.evaluate("() => document.getElementById('job-video').duration") > 0.5
    # The chart loads.
    page.wait_for_function("() => document.getElementById('job-chart').complete", timeout=10_000)
    assert page.evaluate("() => document.getElementById('job-chart').naturalWidth") > 0
    # The summary: one face, mostly happy.
    rows = page.locator("#job-faces tr").all_inner_texts()
    assert len(rows) == 1 and "happy 100%" in rows[0], rows
    assert "happy" in page.get_attribute("#job-share", "aria-label")
    # The download links work.
    links = page.eval_on_selector_all(
        "#job-downloads a", "as => as.map(a => [a.dataset.file, a.getAttribute('href')])")
    assert [f for f, _ in links] == ["frames.csv", "frames.jsonl", "summary.json",
                                     "annotated.mp4", "chart.png"]
    for name, href in links:
        assert href == f"/api/jobs/{job}/{name}?download=1" + (f"&token={TOKEN}" if token else "")
    csv = page.evaluate("""async () => {
        const a = document.querySelector('#job-downloads a[data-file="frames.csv"]');
        const r = await fetch(a.href);
        return [r.status, (await r.text()).split('\\n')[0]]; }""")
    assert csv[0] == 200 and csv[1].startswith("time_s"), csv

    # Clear: the job and its results are deleted on the server.
    assert job_status(base, job, token) == 200
    page.click("#analyze-clear")
    wait_phase(page, ("idle",), 5_000)
    wait_gone(base, job, token)
    assert job in analysis(page)["deleted"]
    assert page.get_attribute("#job-video", "src") is None
    assert not page.is_visible("#analysis")
    assert "nothing of this analysis is kept" in page.inner_text("#analyze-status")
    assert page.errors == []


def test_leaving_the_page_deletes_the_job(server, page, files):
    open_page(page, server + "/")
    page.set_input_files("#analyze-file", str(files["video"]))
    s = wait_phase(page, ("done", "failed", "error"))
    assert s["phase"] == "done", s
    page.goto("about:blank")  # pagehide: DELETE with keepalive
    wait_gone(server, s["job"])


def test_a_new_file_replaces_and_deletes_the_previous_job(server, page, files):
    open_page(page, server + "/")
    page.set_input_files("#analyze-file", str(files["video"]))
    first = wait_phase(page, ("done", "failed", "error"))["job"]
    page.set_input_files("#analyze-file", str(files["photo"]))
    check_photo(page)
    wait_gone(server, first)
    assert not page.is_visible("#video-result")
    assert page.errors == []


@pytest.mark.parametrize("key, message", [
    ("bad_video", "not a video this server can read"),  # the server's 415 text
    ("bad_photo", "only JPEG, PNG and WebP images are accepted"),  # the server's 415 text
    ("text", "neither a photo nor a video"),  # refused by the page itself
])
def test_an_unsupported_file_shows_the_error(server, page, files, key, message):
    open_page(page, server + "/")
    page.set_input_files("#analyze-file", str(files[key]))
    s = wait_phase(page, ("error", "done"), 30_000)
    assert s["phase"] == "error", s
    assert page.is_visible("#analyze-error")
    text = page.inner_text("#analyze-error")
    assert message.lower() in text.lower(), text
    assert page.get_attribute("#analyze-error", "role") == "alert"
    assert s["job"] is None and not page.is_visible("#analysis")
    assert page.errors == []


@pytest.fixture
def small_upload_server(tmp_path, fake_classifier):
    yield from serve_in_thread(tmp_path, fake_classifier, max_upload_bytes=2 * 2**20)


def test_a_video_over_the_upload_limit_shows_the_413(small_upload_server, page, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(bytes(3 * 2**20))
    open_page(page, small_upload_server + "/")
    page.set_input_files("#analyze-file", str(big))
    s = wait_phase(page, ("error", "done"), 30_000)
    assert s["phase"] == "error" and s["job"] is None, s
    text = page.inner_text("#analyze-error")
    assert "too large" in text and "2 MB" in text, text
    assert page.errors == []


def test_a_busy_server_is_shown(server, page, files):
    page.route("**/api/jobs*", lambda route: route.fulfill(
        status=503, json={"error": "server busy: 2 videos are being analysed; try later"}))
    open_page(page, server + "/")
    page.set_input_files("#analyze-file", str(files["video"]))
    wait_phase(page, ("error",), 15_000)
    text = page.inner_text("#analyze-error")
    assert "busy" in text and "2 videos are being analysed" in text, text
    assert page.errors == []


def test_the_camera_and_a_photo_work_together(server, page, files):
    open_page(page, server + "/?transport=ws")
    page.click("#start")
    page.wait_for_function(
        "() => window.facedapps.state === 'error' || window.facedapps.results >= 3",
        timeout=30_000)
    assert page.evaluate("() => window.facedapps.state") == "running"
    page.set_input_files("#analyze-file", str(files["photo"]))
    check_photo(page)
    results = page.evaluate("() => window.facedapps.results")
    page.wait_for_function("(n) => window.facedapps.results > n", arg=results + 3,
                           timeout=15_000)
    assert page.evaluate("() => window.facedapps.state") == "running"
    page.click("#stop")
    page.wait_for_function("() => window.facedapps.state === 'idle'", timeout=5_000)
    assert analysis(page)["phase"] == "done"  # Stop leaves the analysis alone
    assert page.errors == []
