"""The result message (one schema for the data channel, ``/ws`` and ``/ws/stream``)."""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from training.preprocess import LABELS


def face_dict(face_id: int | None, box: Sequence[int], smoothed: np.ndarray,
              probs: np.ndarray) -> dict:
    """One face: ``label``/``score`` from ``smoothed``, ``scores`` from this frame's ``probs``."""
    k = int(np.argmax(smoothed))
    d: dict = {}
    if face_id is not None:
        d["id"] = int(face_id)
    d.update({
        "box": [int(v) for v in box],
        "label": LABELS[k],
        "score": round(float(smoothed[k]), 4),
        "scores": {lab: round(float(p), 4) for lab, p in zip(LABELS, probs)},
    })
    return d


def result_message(session: str, frame: int, width: int, height: int, latency_ms: float,
                   faces: list[dict]) -> dict:
    """The interface's result message."""
    return {"type": "result", "session": session, "frame": int(frame), "width": int(width),
            "height": int(height), "latency_ms": round(float(latency_ms), 2), "faces": faces}


def dumps(msg: dict) -> str:
    return json.dumps(msg, separators=(",", ":"))


def error_message(text: str) -> dict:
    return {"type": "error", "error": text}
