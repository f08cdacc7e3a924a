"""``core.video.frame_to_bgr``: the live server's and the video readers' frame conversion gives
exactly PyAV's ``to_ndarray(format="bgr24")``, for decoded H264 and for other pixel formats and
sizes, from several threads at once (one swscale context per thread)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest

from core.video import frame_to_bgr
from tests.helpers import write_video

pytestmark = pytest.mark.timeout(120)


def decoded(path) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        return list(c.decode(video=0))


def test_decoded_h264_frames_convert_bit_for_bit(tmp_path):
    frames = decoded(write_video(tmp_path / "v.mp4", size=(320, 240)))
    assert len(frames) >= 10 and frames[0].format.name == "yuv420p"
    for f in frames:
        out = frame_to_bgr(f)
        assert out.shape == (240, 320, 3) and out.dtype == np.uint8
        assert np.array_equal(out, f.to_ndarray(format="bgr24"))


@pytest.mark.parametrize("fmt, size", [("yuv420p", (321, 241)), ("rgb24", (64, 48)),
                                       ("yuvj420p", (160, 120)), ("bgr24", (50, 30)),
                                       ("gray", (80, 60))])
def test_other_formats_and_odd_sizes(fmt, size):
    w, h = size
    rng = np.random.default_rng(0)
    src = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w, 3), np.uint8), format="bgr24")
    f = src.reformat(format=fmt)
    out = frame_to_bgr(f)
    assert out.shape == (h, w, 3)
    assert np.array_equal(out, f.to_ndarray(format="bgr24"))


def test_threads_convert_side_by_side(tmp_path):
    frames = decoded(write_video(tmp_path / "v.mp4", size=(320, 240), seconds=2.0))
    expected = [f.to_ndarray(format="bgr24") for f in frames]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(frame_to_bgr, frames * 3))
    assert all(np.array_equal(g, e) for g, e in zip(got, expected * 3))
