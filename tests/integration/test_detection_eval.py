"""``run.py bench-detect`` end to end on a tiny folder made here, and the accurate and live
modes' recall/precision on face_boxes_dev as a regression guard (skipped when the shared data
is absent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from bench.detection import DEFAULT_BOXES, evaluate, load_boxes
from core.faces import FaceDetector
from tests.detection_scenes import face_grid

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def _tiny_folder(path: Path) -> Path:
    """Three composites in the face_boxes_dev format: 80-160 px faces (accurate finds them
    all), one image with no face."""
    path.mkdir()
    boxes = {}
    for name, sizes, size, cols in (("a.jpg", [96, 128, 160, 96], (1280, 720), 4),
                                    ("b.jpg", [80, 120], (640, 480), 2)):
        img, bx = face_grid(sizes, *size, cols=cols)
        cv2.imwrite(str(path / name), img)
        boxes[name] = [list(b) for b in bx]
    img, _ = face_grid([], 640, 480, cols=1)
    cv2.imwrite(str(path / "c.jpg"), img)
    boxes["c.jpg"] = []
    (path / "boxes.json").write_text(json.dumps(boxes))
    return path


def test_detect_command_end_to_end(tmp_path):
    folder = _tiny_folder(tmp_path / "faces")
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "bench-detect", "--boxes",
                        str(folder), "--modes", "live,accurate", "--sizes", "640x480",
                        "--repeats", "3", "--video", "", "--json", str(out)],
                       capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for text in ("CPU:", "recall 24-48", "precision", "ms/frame 640x480 (x fast)", "accurate"):
        assert text in r.stdout
    res = json.loads(out.read_text())
    # live's video scan window is timed too (alternate frames cost that instead)
    assert set(res["cost_ms"]["640x480"]) == {"live", "live window", "accurate", "fast"}
    q = {e["mode"]: e for e in res["quality"]}
    assert q["accurate"]["faces"]["all"] == 6
    assert q["accurate"]["recall"]["all"] == 1.0 and q["accurate"]["false"] == 0
    assert 0 < q["live"]["recall"]["all"] <= 1.0


def test_detect_command_refuses_a_bad_mode_or_folder(tmp_path):
    for args in (["--modes", "warp"], ["--boxes", str(tmp_path)]):
        r = subprocess.run([sys.executable, str(ROOT / "run.py"), "bench-detect", *args,
                            "--sizes", "", "--video", ""],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 2 and "error" in r.stdout


# Measured on the 75 images (README "Face detection"): accurate (BlazeFace tiles + MTCNN + weak
# pairs) recall 0.805 of faces >= 24 px, precision 0.936; live 0.567 and 0.933. The guard allows
# 0.03 less recall and 0.02 less precision.
GUARD = {"accurate": (0.775, 0.915), "live": (0.537, 0.913)}


@pytest.mark.skipif(not (DEFAULT_BOXES / "boxes.json").exists(),
                    reason="shared face_boxes_dev data not present")
@pytest.mark.parametrize("mode", sorted(GUARD))
def test_face_boxes_dev_regression_guard(mode):
    """A regression guard, not a goal: the goals (recall >= 0.80, precision >= 0.90) are
    reported by ``run.py bench-detect``; this fails when a change makes detection worse than
    what was measured when the modes were chosen."""
    e = evaluate(FaceDetector(mode=mode), load_boxes(DEFAULT_BOXES))
    min_recall, min_precision = GUARD[mode]
    assert e.recall() >= min_recall, e.as_dict()
    assert e.precision >= min_precision, e.as_dict()
