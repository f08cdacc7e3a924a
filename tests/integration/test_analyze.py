"""``run.py analyze``: videos in several containers and codecs, a rotated one, broken files,
photos and folders; the CSV/JSON schema; the same labels as the live path."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from bench.face_video import face_frame
from core.analyze import CSV_HEADER, OUTPUT_FILES, output_stems
from core.preprocess import LABELS
from core.video import VideoError
from run import main
from tests.helpers import HAPPY, write_video

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[2]


def rotate_mp4(path: Path, dst: Path) -> Path:
    """A copy whose track header says "show rotated 90 degrees clockwise" (a phone video)."""
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    assert data[i + 4] == 0  # version 0 header: the matrix is 40 bytes after the flags
    off = i + 4 + 40
    data[off:off + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("name, codec, fmt", [
    ("clip.mp4", "libx264", None), ("clip.webm", "libvpx", None), ("clip.mkv", "libx265", None),
    ("clip.avi", "mpeg4", None), ("clip.flv", "flv", None), ("clip.mov", "libx264", None),
])
def test_every_container_gives_rows_a_video_a_chart_and_a_summary(tmp_path, capsys, name, codec,
                                                                   fmt):
    src = write_video(tmp_path / name, codec, fmt)
    out = tmp_path / "out"
    assert main(["analyze", str(src), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_analysed"] == 18 and "error" not in summary
    (face,) = summary["faces"]
    assert face["dominant"] == "happy" and face["frames"] >= 12
    assert abs(sum(summary["share"].values()) - 1.0) < 1e-3
    with av.open(str(out / "annotated.mp4")) as c:  # H264 that browsers play
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.format.name == "yuv420p"
        assert sum(1 for _ in c.decode(s)) == 18
    assert cv2.imread(str(out / "chart.png")) is not None


def test_csv_and_json_lines_schema(tmp_path):
    src = write_video(tmp_path / "c.mp4", "libx264", seconds=1.0)
    out = tmp_path / "out"
    assert main(["analyze", str(src), "--out", str(out), "--no-video"]) == 0
    assert not (out / "annotated.mp4").exists()
    with open(out / "frames.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_HEADER
    for r in rows:
        assert r["label"] in LABELS and r["uncertain"] in ("0", "1")
        assert abs(sum(float(r[lab]) for lab in LABELS) - 1.0) < 0.01
        assert int(r["w"]) > 50 and r["face_id"] == "1"
    lines = [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == 15 and [x["frame"] for x in lines] == list(range(15))
    times = [x["time_s"] for x in lines]
    assert times == sorted(times) and times[1] == pytest.approx(1 / 15, abs=0.01)
    face = lines[-1]["faces"][0]
    assert set(face) == {"id", "box", "label", "score", "uncertain", "scores"}


def test_fps_subsamples_by_timestamp(tmp_path):
    src = write_video(tmp_path / "c.mp4", "libx264", seconds=2.0, fps=30)
    out = tmp_path / "out"
    assert main(["analyze", str(src), "--out", str(out), "--fps", "10"]) == 0
    assert json.loads((out / "summary.json").read_text())["frames_analysed"] == 20


def write_sideways(path: Path, seconds: float = 1.2, fps: int = 15, size=(320, 240)) -> Path:
    """What a phone records held upright: the stored frames show the face turned 90 degrees
    (counter-clockwise); the player must turn them back."""
    w, h = size
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for k in range(int(seconds * fps)):
            upright, _ = face_frame(HAPPY, x=h // 4 + k % 8, y=w // 6, side=min(w, h) * 7 // 12,
                                    size=(h, w))
            img = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


def test_a_rotated_phone_video_is_analysed_upright(tmp_path):
    src = write_sideways(tmp_path / "c.mp4", size=(320, 240))
    rot = rotate_mp4(src, tmp_path / "rotated.mp4")
    out = tmp_path / "out"
    assert main(["analyze", str(rot), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["video"]["rotation"] == 90
    assert (summary["video"]["width"], summary["video"]["height"]) == (240, 320)
    line = json.loads((out / "frames.jsonl").read_text().splitlines()[0])
    assert (line["width"], line["height"]) == (240, 320)
    assert summary["faces"] and summary["faces"][0]["dominant"] == "happy"  # found upright
    # without the rotation the stored frames show the face sideways: not found upright
    assert main(["analyze", str(src), "--out", str(tmp_path / "raw")]) == 0
    raw = json.loads((tmp_path / "raw" / "summary.json").read_text())
    assert raw["video"]["rotation"] == 0 and not raw["faces"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"this is not a video"), "cannot open as video"),
    (lambda p: p.write_bytes(write_video(p.with_suffix(".tmp.mp4"), "libx264")
                             .read_bytes()[:3000]), "cannot open as video"),
    (lambda p: p.write_bytes(header_only(p.with_suffix(".tmp.mp4"))), "no decodable video frames"),
])
def test_broken_files_are_one_clear_line_and_a_nonzero_exit(tmp_path, capsys, make, message):
    bad = tmp_path / "bad.mp4"
    make(bad)
    assert main(["analyze", str(bad), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"error: {bad}: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # no header-only CSV that looks like a faceless video
    # into a folder that holds a good run: that run's files are left as they were
    good = write_video(tmp_path / "good.mp4", "libx264")
    assert main(["analyze", str(good), "--out", str(tmp_path / "kept"), "--no-video"]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()}
    assert main(["analyze", str(bad), "--out", str(tmp_path / "kept")]) == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()} == before


def header_only(path: Path) -> bytes:
    """An MP4 with its index first and every frame cut off: it opens, and has no frame."""
    data = write_video(path, "libx264", options={"movflags": "faststart"}).read_bytes()
    return data[: data.index(b"mdat") + 4]


def test_a_video_that_breaks_off_keeps_what_was_analysed(tmp_path, capsys):
    src = write_video(tmp_path / "c.ts", "libx264", "mpegts", seconds=2.0)
    data = bytearray(src.read_bytes())
    cut = len(data) // 2
    data[cut:cut + 4000] = bytes(4000)  # a damaged stretch, then the file goes on
    (tmp_path / "d.ts").write_bytes(bytes(data[: cut + 8000]))
    out = tmp_path / "out"
    rc = main(["analyze", str(tmp_path / "d.ts"), "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["frames_analysed"] < 30
    rows = (out / "frames.csv").read_text().splitlines()
    assert len(rows) - 1 == sum(f["frames"] for f in summary["faces"])  # rows were kept
    assert rc in (0, 1) and "Traceback" not in capsys.readouterr().err


def test_a_decoder_error_midway_keeps_the_frames_before_it(tmp_path, capsys, monkeypatch):
    # FFmpeg's decoders step over the damage a test can make (above), so the decoder's error
    # after some frames (what core.video.frames raises then) is injected here
    import core.analyze

    src = write_video(tmp_path / "c.mp4", "libx264", seconds=2.0)
    real = core.analyze.frames

    def breaking(path, *args, **kwargs):
        for i, item in enumerate(real(path, *args, **kwargs)):
            if i == 12:
                raise VideoError("the video breaks off after 12 frames", str(path), frames=12,
                                 detail="Invalid data found when processing input")
            yield item

    monkeypatch.setattr(core.analyze, "frames", breaking)
    out = tmp_path / "out"
    assert main(["analyze", str(src), "--out", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_analysed"] == 12 and summary["faces"]
    assert summary["error"] == "the video breaks off after 12 frames"  # no path, no FFmpeg text
    assert len((out / "frames.csv").read_text().splitlines()) == 13
    err = capsys.readouterr().err
    assert f"error: {src}: the video breaks off after 12 frames (what was analysed is kept)" in err


def test_photos_and_folders(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    img, _ = face_frame(HAPPY)
    cv2.imwrite(str(folder / "a.png"), img)
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xffnot really")
    write_video(folder / "c.mp4", "libx264")
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--out", str(out)]) == 1  # b.jpg is broken
    res = json.loads((out / "a.json").read_text())
    assert res["faces"][0]["label"] in LABELS and "id" not in res["faces"][0]
    assert cv2.imread(str(out / "a.annotated.png")).shape == img.shape
    assert json.loads((out / "c" / "summary.json").read_text())["frames_analysed"] == 18
    captured = capsys.readouterr()
    assert "b.jpg" in captured.err and "Traceback" not in captured.err
    assert main(["analyze", str(tmp_path / "missing.mp4")]) == 2


def test_files_that_share_a_name_keep_their_own_results(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    happy, _ = face_frame(HAPPY)
    cv2.imwrite(str(folder / "same.png"), happy)
    cv2.imwrite(str(folder / "same.webp"), np.ascontiguousarray(happy[:, ::-1]))  # a WebP photo
    cv2.imwrite(str(folder / "solo.jpg"), happy)
    write_video(folder / "v.mp4", "libx264")
    write_video(folder / "v.avi", "mpeg4", "avi")
    (folder / "sub").mkdir()
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--out", str(out), "--no-video"]) == 0
    for name in ("same.png", "same.webp"):
        res = json.loads((out / f"{name}.json").read_text())
        assert res["image"] == name and len(res["faces"]) == 1
    assert (out / "solo.json").exists()  # a name of its own keeps the short form
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"v.mp4", "v.avi"}
    assert "1 subfolder(s)" in capsys.readouterr().err
    # a second run without the video: an earlier run's annotated.mp4 is not left beside it
    assert main(["analyze", str(folder / "v.mp4"), "--out", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / "annotated.mp4").exists()
    assert main(["analyze", str(folder / "v.mp4"), "--out", str(tmp_path / "one"),
                 "--no-video"]) == 0
    assert not (tmp_path / "one" / "annotated.mp4").exists()


def test_output_names_never_collide():
    files = [Path(n) for n in ("a.jpg", "a.png", "a.jpg.png", "B.mp4", "b.avi", "c.png")]
    stems = output_stems(files)
    assert stems[Path("c.png")] == "c"
    assert len({s.lower() for s in stems.values()}) == len(files)  # also without case
    assert stems[Path("a.jpg")] == "a.jpg" and stems[Path("a.jpg.png")] == "a.jpg-2"


def test_bad_arguments_and_unwritable_outputs_are_one_line(tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", "libx264")
    for fps in ("-1", "nan", "inf", "five"):  # -1 used to loop for ever
        with pytest.raises(SystemExit) as exc:
            main(["analyze", str(video), "--fps", fps])
        assert exc.value.code == 2
        assert "--fps: must be a number >= 0" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["analyze", str(video), "--out", str(afile)]) == 2
    assert f"--out {afile} is a file" in capsys.readouterr().err
    # a folder inside a file: every input gets its own line, nothing is raised
    assert main(["analyze", str(video), "--out", str(afile / "sub")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {video}: ") and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["analyze", str(empty)]) == 1
    assert "no files to analyse" in capsys.readouterr().err


def test_a_sparse_fps_does_not_stretch_the_duration(tmp_path):
    video = write_video(tmp_path / "v.mp4", "libx264", seconds=1.2)
    out = tmp_path / "out"
    assert main(["analyze", str(video), "--out", str(out), "--fps", "0.01", "--no-video"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_analysed"] == 1 and summary["duration_s"] <= 1.3


SHARED_CLIPS = ROOT.parent / "shared" / "data" / "labeled_videos_dev"


@pytest.mark.skipif(not (SHARED_CLIPS / "labels.csv").exists(),
                    reason="../shared/data/labeled_videos_dev is absent (a user's clone)")
def test_majority_labels_match_the_live_path_on_real_clips(tmp_path):
    """analyze (mp4 and avi) shows the same majority label per clip as the live path's replay
    (``run.py evaluate-video``) at the same frame rate."""
    from bench.video_eval import Clip, observe, replay
    from core.pipeline import FacePipeline
    from core.runtimes import load_classifier
    from core.temporal import FilterConfig

    clf = load_classifier(ROOT / "models" / "default")
    for name in ("mead__eamm__surprised.mp4", "enterface05__darkhorse1997__s1_ha_1.avi",
                 "mead__dreamtalk__W009_front_fear_level3_001.mp4"):
        out = tmp_path / name
        assert main(["analyze", str(SHARED_CLIPS / name), "--out", str(out), "--fps", "15",
                     "--no-video"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        main_face = max(summary["faces"], key=lambda f: f["frames"])
        shown = replay(observe(Clip(SHARED_CLIPS / name, "happy"), FacePipeline(), clf, 15.0)
                       .frames, FilterConfig())
        live_majority = LABELS[np.bincount(shown.label, minlength=7).argmax()]
        assert main_face["dominant"] == live_majority, name


def test_predict_takes_folders_and_large_photos(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    happy, _ = face_frame(HAPPY)
    cv2.imwrite(str(folder / "a.jpg"), happy)
    (folder / "notes.txt").write_text("not a photo")  # not an image name: not taken
    # 20 megapixels: over the server's 4096x4096 limit, under the one for local files
    cv2.imwrite(str(tmp_path / "big.png"), np.full((4000, 5000), 128, np.uint8))
    assert main(["predict", str(folder), str(tmp_path / "big.png"), "--detect", "never"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [Path(x["image"]).name for x in lines] == ["a.jpg", "big.png"]
    assert (lines[1]["width"], lines[1]["height"]) == (5000, 4000) and "error" not in lines[1]
    (tmp_path / "none").mkdir()
    assert main(["predict", str(tmp_path / "none"), "--detect", "never"]) == 1
    said = json.loads(capsys.readouterr().out)
    assert said["error"] == "no JPEG, PNG or WebP files in it"


def test_the_chart_stays_inside_its_panel():
    """A clip of 2.3 s: the last (partial) second's mean is drawn inside the panel, not at
    2.5 s past its right edge."""
    from core.analyze import _FaceHistory, chart_png

    h = _FaceHistory()
    for k in range(35):  # 15 fps, 0 .. 2.27 s
        h.times.append(k / 15)
        h.labels.append("happy")
        h.probs.append(np.eye(len(LABELS))[LABELS.index("happy")])
    img = cv2.imdecode(np.frombuffer(chart_png({1: h}, 35 / 15), np.uint8), cv2.IMREAD_COLOR)
    right_edge = img.shape[1] - 20  # the panel's right side (chart_png's margin)
    outside = img[40:, right_edge + 2:]
    assert (outside.min(axis=2) > 230).all()  # only white (and anti-aliasing) beyond it


def test_the_summary_line_names_the_faces_seen_most_and_counts_the_rest():
    import run

    faces = [{"id": i, "dominant": "happy", "frames": 100 - i} for i in range(1, 31)]
    faces.append({"id": 31, "dominant": "sad", "frames": 500})
    line = run.faces_line(faces, most=3)
    assert line == ("#1 happy (99 frames), #2 happy (98 frames), #31 sad (500 frames), "
                    "and 28 more in summary.json")
    assert run.faces_line(faces[:2]) == "#1 happy (99 frames), #2 happy (98 frames)"
    assert run.faces_line([]) == "no face"
