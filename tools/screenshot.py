"""Screenshot of the page with the shipped model, for the README.

    python tools/screenshot.py [--model models/default] [--out docs/screenshot.png]

Serves the model on 127.0.0.1 (free port), plays real FER2013 faces through Chromium's fake
camera (bench/face_video.py), clicks Start, waits for live results and saves the page.
Needs Debian's chromium (`apt-get install -y chromium`) and playwright (test extras).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from bench.browser import CHROMIUM, ServerThread  # noqa: E402
from bench.face_video import make_video  # noqa: E402
from core.runtimes import load_classifier  # noqa: E402
from server.app import create_app  # noqa: E402
from server.config import ServerConfig  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    ap.add_argument("--seconds", type=float, default=6.0, help="run this long before the shot")
    args = ap.parse_args()
    if CHROMIUM is None:
        print("error: Chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    clf = load_classifier(args.model)
    st = ServerThread(create_app(ServerConfig(port=0, model_dir=args.model), classifier=clf))
    url = st.start()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        video = make_video(Path(tmp) / "faces.y4m", seconds=8, fps=15)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run"])
        page = browser.new_page(viewport={"width": 1180, "height": 1000})
        page.goto(url + "/")
        page.click("#start")
        page.wait_for_function("() => window.facedapps.results >= 10", timeout=60_000)
        page.wait_for_timeout(args.seconds * 1000)
        page.wait_for_function("() => (window.facedapps.lastResult?.faces || []).length > 0",
                               timeout=15_000)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.out)
        s = page.evaluate("() => window.facedapps")
        print(f"saved {args.out}: {s['results']} results, transport {s['transport']}, "
              f"backend {clf.backend}")
        browser.close()
    st.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
