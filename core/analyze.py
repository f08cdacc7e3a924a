"""Analysis of recorded videos and photos: the live path, offline, with files to keep.

A video goes frame by frame through the same code as a live session: ``core.pipeline``
(detection, crop), the classifier, and a ``FaceTracker`` with the temporal filter
(``FaceTracker.describe``: the face objects a session sends), stamped with the video's own
timestamps. Written per video (:data:`OUTPUT_FILES`): every frame's faces as CSV and JSON lines
(time, face id, box, shown label and confidence, uncertain, the seven probabilities), an
annotated H264 MP4 that browsers play, a PNG chart of each face's expression over time, and a
summary (faces, dominant expression per face, share of time per class). A photo gets its face
objects (JSON) and an annotated PNG.

Outputs go to an :class:`Outputs` (a folder for the CLI, memory for the server's upload jobs,
so uploads never touch the disk). Rows are written as frames are analysed: when a video breaks
off, what was analysed is kept and the summary says where it stopped.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

import cv2
import numpy as np

from core.pipeline import FacePipeline, decode_image
from core.preprocess import LABELS
from core.temporal import FilterConfig
from core.tracker import DEFAULT_REUSE_S, FaceTracker
from core.video import Source, VideoError, frames, probe

log = logging.getLogger(__name__)

#: The files of one analysed video.
OUTPUT_FILES = {"csv": "frames.csv", "jsonl": "frames.jsonl", "video": "annotated.mp4",
                "chart": "chart.png", "summary": "summary.json"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: BGR colours of the labels (the page's, client/labels.js), and of uncertain faces.
COLORS = {"angry": (80, 83, 239), "disgust": (106, 187, 102), "fear": (188, 71, 171),
          "happy": (79, 213, 255), "sad": (245, 165, 66), "surprise": (38, 167, 255),
          "neutral": (197, 190, 176)}
MUTED = (166, 160, 154)
CSV_HEADER = ["time_s", "frame", "face_id", "x", "y", "w", "h", "label", "score", "uncertain",
              *LABELS]

Progress = Callable[[float], None]


class _KeptBuffer(io.BytesIO):
    """A memory file whose contents survive ``close()`` (writers close what they write)."""

    def close(self) -> None:
        self.seek(0)


class Outputs:
    """Where the files go: a folder, or memory (``folder=None``; read back with :meth:`get`).
    The folder is made when the first file is opened (OSError if it cannot be)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.files: dict[str, io.BytesIO] = {}

    def open(self, name: str) -> BinaryIO:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            return open(self.folder / name, "wb")
        buf = _KeptBuffer()
        self.files[name] = buf
        return buf

    def get(self, name: str) -> bytes:
        if self.folder is not None:
            return (self.folder / name).read_bytes()
        return self.files[name].getvalue()

    def names(self) -> list[str]:
        if self.folder is not None:
            return sorted(p.name for p in self.folder.iterdir() if p.is_file())
        return sorted(self.files)


def draw_faces(bgr: np.ndarray, faces: list[dict]) -> np.ndarray:
    """A copy of ``bgr`` with each face's box and "label score% #id" (muted when uncertain)."""
    img = bgr.copy()
    # Text and lines in proportion to the frame (the same share of it in a 640x480 photo and a
    # 1080p video shown at the same size; capped at 1.2 it was a third of that at 1080p).
    scale = max(0.5, min(5.0, max(img.shape[:2]) / 900))
    thick = max(1, int(round(2 * scale)))
    for f in faces:
        x, y, w, h = f["box"]
        color = MUTED if f.get("uncertain") else COLORS.get(f["label"], (255, 255, 255))
        cv2.rectangle(img, (x, y), (x + w, y + h), color, thick)
        text = f"{f['label']}{'?' if f.get('uncertain') else ''} {round(100 * f['score'])}%"
        if "id" in f:
            text += f" #{f['id']}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, thick)
        ty = y - th - base - 4 if y - th - base - 4 >= 0 else y
        cv2.rectangle(img, (x, ty), (x + tw + 6, ty + th + base + 4), color, -1)
        cv2.putText(img, text, (x + 3, ty + th + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                    (17, 17, 17), thick, cv2.LINE_AA)
    return img


class _Mp4Writer:
    """H264 (yuv420p) MP4 with each frame at its own timestamp (ms time base). A file gets its
    index at the front (``faststart``); in memory the MP4 is fragmented, which needs no second
    pass over the file. Browsers play both."""

    def __init__(self, dst: BinaryIO, width: int, height: int, in_memory: bool) -> None:
        import av

        self.w, self.h = width - width % 2, height - height % 2
        flags = "frag_keyframe+empty_moov+default_base_moof" if in_memory else "+faststart"
        self.container = av.open(dst, "w", format="mp4", options={"movflags": flags})
        self.stream = self.container.add_stream("libx264", rate=1000)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.w, self.h, "yuv420p"
        self.stream.time_base = Fraction(1, 1000)
        self.stream.options = {"preset": "veryfast", "crf": "23"}
        self._last = -1

    def write(self, t: float, bgr: np.ndarray) -> None:
        import av

        pts = max(int(round(t * 1000)), self._last + 1)
        self._last = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr[: self.h, : self.w]),
                                           format="bgr24")
        frame.pts = pts
        for pkt in self.stream.encode(frame):
            self.container.mux(pkt)

    def close(self) -> None:
        for pkt in self.stream.encode():
            self.container.mux(pkt)
        self.container.close()


@dataclass
class _FaceHistory:
    times: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)


def chart_png(history: dict[int, _FaceHistory], duration: float, max_faces: int = 6) -> bytes:
    """Each face's expression over time: a strip of the shown label's colour and the class
    probabilities (one-second means) as lines; the faces seen longest, up to ``max_faces``."""
    faces = sorted(history.items(), key=lambda kv: -len(kv[1].times))[:max_faces]
    panel_h, width, left, right = 170, 960, 70, 20
    legend_h = 40
    img = np.full((legend_h + panel_h * max(1, len(faces)) + 30, width, 3), 255, np.uint8)
    span = max(duration, 1e-3)
    x_of = lambda t: int(left + (width - left - right) * t / span)  # noqa: E731
    for i, (fid, h) in enumerate(faces):
        top = legend_h + i * panel_h
        y0, y1 = top + 30, top + panel_h - 20
        cv2.putText(img, f"face #{fid}", (8, top + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (40, 40, 40), 1, cv2.LINE_AA)
        cv2.rectangle(img, (left, y0), (width - right, y1), (200, 200, 200), 1)
        for v, y in (("1", y0), ("0", y1)):
            cv2.putText(img, v, (left - 14, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (80, 80, 80),
                        1, cv2.LINE_AA)
        for t, lab in zip(h.times, h.labels):  # the shown label as a strip above the panel
            cv2.line(img, (x_of(t), top + 22), (x_of(t), top + 28), COLORS[lab], 2)
        secs: dict[int, list[tuple[float, np.ndarray]]] = defaultdict(list)
        for t, p in zip(h.times, h.probs):
            secs[int(t)].append((t, p))
        # each second's mean drawn at the mean time of its frames (a last, partial second
        # stays inside the panel)
        pts = sorted((float(np.mean([t for t, _ in v])), np.mean([p for _, p in v], axis=0))
                     for v in secs.values())
        for k, lab in enumerate(LABELS):
            line = [(x_of(t), int(y1 - (y1 - y0) * float(p[k]))) for t, p in pts]
            if len(line) > 1:
                cv2.polylines(img, [np.array(line, np.int32)], False, COLORS[lab], 2, cv2.LINE_AA)
            elif line:
                cv2.circle(img, line[0], 3, COLORS[lab], -1)
    bottom = img.shape[0] - 10
    for s in range(0, int(span) + 1, max(1, int(span) // 10 or 1)):
        cv2.putText(img, f"{s}s", (x_of(s) - 8, bottom), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (80, 80, 80), 1, cv2.LINE_AA)
    for k, lab in enumerate(LABELS):  # legend
        x = left + k * 125
        cv2.rectangle(img, (x, 12), (x + 14, 26), COLORS[lab], -1)
        cv2.putText(img, lab, (x + 20, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (40, 40, 40), 1,
                    cv2.LINE_AA)
    ok, png = cv2.imencode(".png", img)
    return png.tobytes()


def summarize(history: dict[int, _FaceHistory], frames_done: int, duration: float) -> dict:
    """Faces (by track), each face's dominant shown expression and share of time per class."""
    faces = []
    total: Counter[str] = Counter()
    for fid, h in sorted(history.items()):
        counts = Counter(h.labels)
        total.update(counts)
        n = len(h.labels)
        faces.append({"id": fid, "frames": n, "first_s": round(h.times[0], 3),
                      "last_s": round(h.times[-1], 3),
                      "dominant": counts.most_common(1)[0][0],
                      "share": {lab: round(counts[lab] / n, 4) for lab in LABELS}})
    n_all = sum(total.values())
    return {"frames_analysed": frames_done, "duration_s": round(duration, 3),
            "faces": faces,
            "share": {lab: round(total[lab] / n_all, 4) if n_all else 0.0 for lab in LABELS}}


#: A video that decodes fewer frames than its header counts, by more than this share (and
#: more than 2 frames), ends early (cut off): ``"error"`` and ``"ends_early"`` in the summary;
#: what was read is analysed. Frame counts, not durations: a container's duration can include
#: a longer audio track or a held last frame.
ENDS_EARLY_SHARE = 0.05


def analyze_video(src: Source, classifier: Any, out: Outputs, fps: float | None = None,
                  annotate: bool = True, progress: Progress | None = None,
                  pipeline: FacePipeline | None = None, filt: FilterConfig | None = None,
                  reuse_s: float = DEFAULT_REUSE_S, name: str | None = None) -> dict:
    """Analyse one video into ``out`` (:data:`OUTPUT_FILES`); returns the summary (its
    ``source``: ``name``, else the file's name, or "upload" for an in-memory file), which has
    ``"error"`` when the video could not be read to its end (the files then hold what was
    analysed). VideoError when nothing at all could be read."""
    info = probe(src)
    pipeline = pipeline or FacePipeline()
    tracker = FaceTracker(LABELS, filter=filt)
    scan = pipeline.scanner()
    history: dict[int, _FaceHistory] = defaultdict(_FaceHistory)
    stats: dict[str, int] = {}
    stream = frames(src, fps, stats)
    # The first frame before any file is opened: a video with no readable frame raises
    # VideoError here and leaves no header-only files (nor an earlier run's files cut to zero).
    first = next(stream)
    csv_fh = io.TextIOWrapper(out.open(OUTPUT_FILES["csv"]), encoding="utf-8", newline="")
    jsonl_fh = io.TextIOWrapper(out.open(OUTPUT_FILES["jsonl"]), encoding="utf-8")
    rows = csv.writer(csv_fh)
    rows.writerow(CSV_HEADER)
    video: _Mp4Writer | None = None
    done, t_last, error = 0, 0.0, None
    try:
        for t, bgr in itertools.chain([first], stream):
            ff = pipeline.faces(bgr, scan)
            plan = tracker.start_frame(t, ff.boxes, reuse_s, ff.carried,  # as server.session
                                       (ff.width, ff.height))
            ff = ff.subset(plan.keep)
            need = ff.subset(plan.need)
            fresh = classifier.predict_batch(need.batch) if need.boxes else need.batch[:0]
            faces, probs = tracker.finish_frame(plan, np.asarray(fresh), (ff.width, ff.height))
            for f, p in zip(faces, probs):
                h = history[f["id"]]
                h.times.append(t)
                h.labels.append(f["label"])
                h.probs.append(np.asarray(p, np.float64))
                rows.writerow([f"{t:.3f}", done, f["id"], *f["box"], f["label"],
                               f"{f['score']:.4f}", int(f["uncertain"]),
                               *(f"{float(v):.4f}" for v in p)])
            jsonl_fh.write(json.dumps({"time_s": round(t, 3), "frame": done,
                                       "width": ff.width, "height": ff.height,
                                       "faces": faces}, separators=(",", ":")) + "\n")
            if annotate:
                if video is None:
                    video = _Mp4Writer(out.open(OUTPUT_FILES["video"]), ff.width, ff.height,
                                       in_memory=out.folder is None)
                video.write(t, draw_faces(bgr, faces))
            done += 1
            t_last = t
            if progress is not None and info.duration:
                progress(min(1.0, t / info.duration))
    except VideoError as exc:  # it broke off after the first frame: keep what was analysed
        error = exc.reason
    finally:
        csv_fh.close()
        jsonl_fh.close()
        if video is not None:
            video.close()
    duration = t_last + (1.0 / fps if fps else 1.0 / info.fps if info.fps else 0.0)
    if info.duration:  # a sparse --fps: the last frame stands for the rest, not past the end
        duration = min(duration, max(info.duration, t_last))
    decoded = stats.get("decoded", 0)
    ends_early = bool(not error and info.frames and decoded < info.frames - max(
        2, ENDS_EARLY_SHARE * info.frames))  # ended quietly before the frames its header counts
    if ends_early:
        error = (f"the video ends after {decoded} of the {info.frames} frames its header "
                 "counts (cut off?)")
    source = name or (Path(str(src)).name if isinstance(src, (str, Path)) else "upload")
    summary = {"source": source,
               "video": {"width": info.width, "height": info.height, "fps": round(info.fps, 3),
                         "codec": info.codec, "rotation": info.rotation,
                         "duration_s": info.duration},
               "fps_analysed": fps, **summarize(history, done, duration),
               "files": [n for k, n in OUTPUT_FILES.items() if k != "video" or video]}
    if error:
        summary["error"] = error
    if ends_early:
        summary["ends_early"] = True
    with out.open(OUTPUT_FILES["chart"]) as fh:
        fh.write(chart_png(history, duration))
    with out.open(OUTPUT_FILES["summary"]) as fh:
        fh.write((json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    if progress is not None:
        progress(1.0)
    return summary


def analyze_image(data: bytes, classifier: Any, out: Outputs | None, name: str = "image",
                  pipeline: FacePipeline | None = None, max_pixels: int = 4096 * 4096,
                  stem: str | None = None) -> dict:
    """Every face of one JPEG/PNG/WebP image: ``{"image", "width", "height", "faces"}``; with
    ``out``, also ``<stem>.json`` and an annotated ``<stem>.annotated.png`` (``stem``: default
    ``name`` without its extension). ImageError if unusable."""
    img = decode_image(data, max_pixels)
    pipeline = pipeline or FacePipeline(mode="accurate")  # a photo: every face, as /api/predict
    faces = pipeline.classify_image(img, classifier)
    result = {"image": name, "width": int(img.shape[1]), "height": int(img.shape[0]),
              "faces": faces}
    if out is not None:
        stem = stem or Path(name).stem
        with out.open(f"{stem}.json") as fh:
            fh.write((json.dumps(result, indent=2) + "\n").encode("utf-8"))
        ok, png = cv2.imencode(".png", draw_faces(img, faces))
        with out.open(f"{stem}.annotated.png") as fh:
            fh.write(png.tobytes())
    return result


def inputs(path: str | Path) -> Iterator[Path]:
    """The files to analyse: ``path`` itself, or a folder's files (sorted, not recursive)."""
    p = Path(path)
    if p.is_dir():
        yield from sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith("."))
    else:
        yield p


def output_stems(files: Sequence[Path]) -> dict[Path, str]:
    """The name each file's outputs get: its stem (``a.mp4`` -> ``a``), or its whole name where
    two files share a stem (``same.jpg`` and ``same.png`` -> ``same.jpg``, ``same.png``), and a
    ``-2``, ``-3``... where even that is taken; compared without case (as on macOS and Windows
    disks), so that no file's results overwrite another's."""
    count = Counter(f.stem.lower() for f in files)
    taken: set[str] = set()
    out = {}
    for f in files:
        name = base = f.stem if count[f.stem.lower()] == 1 else f.name
        k = 2
        while name.lower() in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name.lower())
        out[f] = name
    return out


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
