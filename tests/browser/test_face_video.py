"""The fake-camera video: a valid Y4M that Chromium reads, with a detectable face in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.face_video import HEIGHT, WIDTH, make_frames, write_y4m

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def test_frames_shape_and_switching():
    frames = make_frames(seconds=2, fps=15)
    assert len(frames) == 30
    assert all(f.shape == (HEIGHT, WIDTH, 3) and f.dtype == np.uint8 for f in frames)
    # The face moves and the image changes each second.
    assert not np.array_equal(frames[0], frames[1])
    crop = lambda f: f[f.shape[0] // 2 - 20 : f.shape[0] // 2 + 20]  # noqa: E731
    assert not np.array_equal(crop(frames[0]), crop(frames[15]))


def test_y4m_layout(tmp_path):
    frames = make_frames(seconds=1, fps=15)
    path = write_y4m(tmp_path / "v.y4m", frames, fps=15)
    data = path.read_bytes()
    header = b"YUV4MPEG2 W640 H480 F15:1 Ip A1:1 C420jpeg\n"
    assert data.startswith(header)
    frame_bytes = WIDTH * HEIGHT * 3 // 2
    assert len(data) == len(header) + len(frames) * (len(b"FRAME\n") + frame_bytes)
    # The first frame decodes back to (nearly) the same picture.
    y = len(header) + len(b"FRAME\n")
    i420 = np.frombuffer(data[y : y + frame_bytes], np.uint8).reshape(HEIGHT * 3 // 2, WIDTH)
    back = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    assert np.abs(back.astype(int) - frames[0].astype(int)).mean() < 3


def test_detector_finds_the_face_in_most_frames():
    from core.faces import FaceDetector

    det = FaceDetector()
    frames = make_frames(seconds=6, fps=15)[::3]  # every image, several positions
    found = sum(1 for f in frames if det.detect(f))
    assert found >= 0.9 * len(frames), f"face found in {found}/{len(frames)} frames"


def test_cli(tmp_path):
    out = tmp_path / "cli.y4m"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "face_video.py"), str(out),
                        "--seconds", "0.4"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().startswith(b"YUV4MPEG2 W640 H480 F15:1")
    assert "6 frames" in r.stdout
