"""Live detection of small real faces: a video-call *gallery* made of the labelled dev clips.

A screen-shared meeting shows many people at once, each in a small cell. This builds such a
video: each 640x480 frame is a G x G grid of cells, each cell one real clip of
``labeled_videos_dev`` (real people in their own rooms, resized whole to fit the cell, aspect
kept), so the faces are real, frontal-ish and of known size (about 24-48 px tall at G = 6-8).
The frames go through one :class:`core.faces.FrameScan` at 15 fps, as a live session's do, and
are counted from the end of the first scan cycle.

Ground truth: the face that the ``live`` mode finds in the full-size clip frame (where it is
large), mapped into its cell; a cell whose frame has not exactly one face there is left out
(detections centred in it are ignored). Matching is ``bench.detection.match_image``'s.

Limits: the clips are posed, well-lit studio or webcam recordings shrunk whole, which is
kinder than a camera seeing distant people (blur, noise, turned heads); the crowd photos of
``face_boxes_dev`` are the harder measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.detection import DEFAULT_CLIPS, match_image, table
from bench.video_eval import read_clips
from bench.videos import encode_ts, letterbox
from core.faces import FaceDetector, FrameScan
from core.video import frames

#: Grid sizes: 5 x 5 to 8 x 8 cells at 640x480 put the dev clips' faces at about 24-60 px.
GRIDS = (5, 6, 7, 8)
SIZE = (640, 480)
FPS = 15.0
#: Frames per grid (4 s at 15 fps); a shorter clip loops.
FRAMES = 60
#: (label, low, high) of the recall columns, by the face's height in the gallery.
BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("<24", 0, 24), ("24-32", 24, 32), ("32-48", 32, 48), ("48-96", 48, 96))

Box = tuple[int, int, int, int]
Cell = tuple[np.ndarray, "Box | None"]


def gallery_frame(cells: Sequence[Cell], grid: int, size: tuple[int, int] = SIZE
                  ) -> tuple[np.ndarray, list[Box], list[Box]]:
    """One gallery frame: ``cells`` (row by row, ``grid * grid`` of them) are ``(BGR frame,
    its face box or None)``; each frame is resized whole into its cell (aspect kept, centred,
    black bars). Returns the frame, the face boxes in it, and the cells without a box (to
    ignore)."""
    w, h = size
    cw, ch = w // grid, h // grid
    canvas = np.zeros((h, w, 3), np.uint8)
    gts: list[Box] = []
    ignore: list[Box] = []
    for c, (img, box) in enumerate(cells[: grid * grid]):
        cx, cy = (c % grid) * cw, (c // grid) * ch
        canvas[cy : cy + ch, cx : cx + cw], s, x, y = letterbox(img, cw, ch)
        x0, y0 = cx + x, cy + y
        if box is None:
            ignore.append((cx, cy, cw, ch))
        else:
            bx, by, bw, bh = box
            gts.append((round(x0 + bx * s), round(y0 + by * s), round(bw * s),
                        round(bh * s)))
    return canvas, gts, ignore


@dataclass
class GalleryResult:
    """Recall by face height (found, faces) and detections, over the counted frames."""

    mode: str
    grid: int
    counted_from: int
    found: dict[str, list[int]] = field(default_factory=lambda: {b[0]: [0, 0] for b in BUCKETS})
    hits: int = 0
    false: int = 0

    def add(self, other: GalleryResult) -> None:
        for k, (a, n) in other.found.items():
            self.found[k][0] += a
            self.found[k][1] += n
        self.hits += other.hits
        self.false += other.false

    @property
    def precision(self) -> float | None:
        """None when nothing was detected."""
        n = self.hits + self.false
        return self.hits / n if n else None

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "grid": self.grid, "counted_from_frame": self.counted_from,
                "recall": {k: (round(a / n, 4) if n else None) for k, (a, n) in
                           self.found.items()},
                "faces": {k: n for k, (_, n) in self.found.items()},
                "precision": None if self.precision is None else round(self.precision, 4),
                "false": self.false}


class ClipCells:
    """The dev clips' frames at ``fps`` (at most ``frames`` each) with their ground-truth face,
    read once."""

    def __init__(self, folder: str | Path = DEFAULT_CLIPS, fps: float = FPS,
                 frames_per_clip: int = FRAMES) -> None:
        self.paths = sorted(c.path for c in read_clips(folder))  # ClipError: a bad labels.csv
        self.fps, self.n = fps, frames_per_clip
        self._truth = FaceDetector(mode="live")
        self._cache: dict[Path, list[Cell]] = {}

    def clip(self, i: int) -> list[Cell]:
        name = self.paths[i % len(self.paths)]
        if name not in self._cache:
            cells: list[Cell] = []
            for _, img in frames(name, self.fps):
                dets = self._truth.detect(img)
                cells.append((img, dets[0].box if len(dets) == 1 else None))
                if len(cells) >= self.n:
                    break
            if not cells:
                raise ValueError(f"no frame in {name.name}")
            self._cache[name] = cells
        return self._cache[name]

    def cells(self, grid: int, t: int) -> list[Cell]:
        """Frame ``t`` of the first ``grid * grid`` clips (sorted by name; a short one loops)."""
        out = []
        for c in range(grid * grid):
            clip = self.clip(c)
            out.append(clip[t % len(clip)])
        return out


def gallery_recall(detector: FaceDetector, mode: str, clips: ClipCells, grid: int,
                   frames_n: int = FRAMES, size: tuple[int, int] = SIZE) -> GalleryResult:
    """``detector`` through one FrameScan over ``frames_n`` gallery frames of ``grid`` x
    ``grid`` clips; frames counted from the end of the first scan cycle."""
    scan = FrameScan(detector)
    res = GalleryResult(mode, grid, 2 * detector.windows(*size))
    for t in range(frames_n):
        img, gts, ignore = gallery_frame(clips.cells(grid, t), grid, size)
        dets = scan.detect(img)[0]
        if t < res.counted_from:
            continue
        m = match_image(dets, gts, ignore, min_px=0)
        res.hits += m.hits
        res.false += m.false
        for g, hit in zip(gts, m.found):
            for label, lo, hi in BUCKETS:
                if lo <= g[3] < hi:
                    res.found[label][0] += int(hit)
                    res.found[label][1] += 1
    return res


def run(detectors: dict[str, FaceDetector], folder: str | Path = DEFAULT_CLIPS,
        grids: Sequence[int] = GRIDS) -> dict[str, object]:
    """Print the gallery table (each mode at each grid, then all grids) and return it."""
    clips = ClipCells(folder)
    print(f"\nGallery of the clips in {Path(folder).name} ({SIZE[0]}x{SIZE[1]}, G x G cells, "
          f"{FRAMES} frames at {FPS:g} fps, counted after the first scan cycle; recall by "
          "face height, faces in brackets)")
    rows: list[list[object]] = []
    out: dict[str, object] = {}
    for name, det in detectors.items():
        total = GalleryResult(name, 0, 0)
        for g in grids:
            r = gallery_recall(det, name, clips, g)
            total.add(r)
            out[f"{name} {g}x{g}"] = r.as_dict()
            rows.append(_row(f"{name} {g}x{g}", r))
        out[f"{name} all"] = total.as_dict()
        rows.append(_row(f"{name}, all grids", total))
    print(table(["mode", *(b[0] + " px" for b in BUCKETS), "precision"], rows))
    return out


def _row(label: str, r: GalleryResult) -> list[object]:
    cells = [f"{a / n:.3f} ({n})" if n else "-" for a, n in r.found.values()]
    return [label, *cells, "-" if r.precision is None else f"{r.precision:.3f}"]


def write_video(path: str | Path, grid: int, frames_n: int = 150,
                folder: str | Path = DEFAULT_CLIPS) -> None:
    """The gallery as an H264 (constrained baseline) MP4 at 15 fps, e.g. to stream it to a
    server with ``run.py stream --video``."""
    clips = ClipCells(folder, frames_per_clip=frames_n)
    images = (gallery_frame(clips.cells(grid, t), grid)[0] for t in range(frames_n))
    encode_ts(Path(path), images, *SIZE, container_format="mp4")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="write the dev-clip gallery as a video")
    ap.add_argument("out", help="MP4 file to write")
    ap.add_argument("--grid", type=int, default=8, help="G: G x G cells (default 8)")
    ap.add_argument("--frames", type=int, default=150, help="frames at 15 fps (default 150)")
    ap.add_argument("--clips", default=str(DEFAULT_CLIPS), help="folder with labels.csv")
    a = ap.parse_args()
    if a.grid < 1 or a.frames < 1:
        ap.error("--grid and --frames must be at least 1")
    try:
        write_video(a.out, a.grid, a.frames, a.clips)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {a.out}")
