"""Synthetic scenes for the detection tests: composites of the FER2013 fixture faces at chosen
sizes, and images with no face (noise, stripes, checkerboard, an empty room, an animal-like
blob). All made in memory; nothing is read but ``tests/fixtures/faces``.

FER2013 crops are tight (brows to chin, no hair or head outline) and gray, so a detector finds
them less readily than real faces of the same size; their edges are feathered so that the
pasted square's corners do not look like small faces.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from tests.helpers import face_images

Box = tuple[int, int, int, int]


def paste_face(canvas: np.ndarray, face: np.ndarray, x: int, y: int, side: int) -> Box:
    """Blend the gray ``face`` upscaled to ``side`` px into ``canvas`` at ``(x, y)`` with soft
    edges; returns its box."""
    f = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    r = max(1, side // 10)
    mask = np.zeros((side, side), np.float32)
    mask[r:-r, r:-r] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), r / 2 + 0.5)[..., None]
    roi = canvas[y : y + side, x : x + side].astype(np.float32)
    canvas[y : y + side, x : x + side] = (roi * (1 - mask) + f[..., None] * mask).astype(np.uint8)
    return (x, y, side, side)


def face_grid(sizes: Sequence[int], width: int, height: int, cols: int,
              background: int = 128) -> tuple[np.ndarray, list[Box]]:
    """A BGR ``width`` x ``height`` canvas with one fixture face per entry of ``sizes`` (cycling
    through the fixtures, mirrored on every other round), centred in the cells of a grid of
    ``cols`` columns; returns the image and the faces' boxes."""
    faces = face_images()
    rows = max(1, -(-len(sizes) // cols))
    cw, ch = width // cols, height // rows
    canvas = np.full((height, width, 3), background, np.uint8)
    boxes = []
    for i, side in enumerate(sizes):
        if side > min(cw, ch):
            raise ValueError(f"a {side} px face does not fit a {cw}x{ch} cell")
        face = faces[i % len(faces)]
        if (i // len(faces)) % 2:
            face = face[:, ::-1]
        r, c = divmod(i, cols)
        boxes.append(paste_face(canvas, face, c * cw + (cw - side) // 2,
                                r * ch + (ch - side) // 2, side))
    return canvas, boxes


def found(dets: Sequence, boxes: Sequence[Box]) -> int:
    """How many of ``boxes`` hold the centre of some detection (``core.faces.Detection``)."""
    n = 0
    for x, y, w, h in boxes:
        n += any(x <= d.box[0] + d.box[2] / 2 <= x + w and y <= d.box[1] + d.box[3] / 2 <= y + h
                 for d in dets)
    return n


def non_face_images(width: int, height: int, seed: int = 0) -> dict[str, np.ndarray]:
    """BGR images with no face: uniform noise, blurred noise, vertical stripes, a checkerboard,
    an "empty room" (wall gradient, floor, door, window), an animal-like blob (a
    four-legged silhouette from the side, no facial features), black and white."""
    rng = np.random.default_rng(seed)
    w, h = width, height
    out: dict[str, np.ndarray] = {}
    out["noise"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out["blurred noise"] = cv2.GaussianBlur(out["noise"], (0, 0), 3)
    bars = ((np.arange(w) // 16) % 2 * 255).astype(np.uint8)
    out["stripes"] = np.repeat(np.repeat(bars[None, :, None], h, 0), 3, 2)
    yy, xx = np.mgrid[0:h, 0:w]
    out["checkerboard"] = np.repeat((((yy // 24 + xx // 24) % 2) * 255).astype(np.uint8)[..., None],
                                    3, 2)
    room = (np.linspace(200, 150, h)[:, None, None] * np.array([1.0, 0.95, 0.85])
            * np.ones((1, w, 1))).astype(np.uint8)
    room[int(h * 0.7):] = (90, 110, 140)
    cv2.rectangle(room, (int(w * .1), int(h * .25)), (int(w * .25), int(h * .7)), (60, 80, 110), -1)
    cv2.rectangle(room, (int(w * .55), int(h * .2)), (int(w * .85), int(h * .45)),
                  (230, 220, 200), -1)
    cv2.line(room, (int(w * .7), int(h * .2)), (int(w * .7), int(h * .45)), (120, 120, 120), 3)
    out["empty room"] = room
    # A four-legged animal seen from the side: body, legs, neck, a long head, a pointed ear,
    # a tail; no eyes or other facial features.
    animal = np.full((h, w, 3), (80, 160, 90), np.uint8)
    cx, cy, u = w // 2, h // 2, min(w, h) / 480
    brown = (40, 70, 120)

    def p(dx: float, dy: float) -> tuple[int, int]:
        return int(cx + dx * u), int(cy + dy * u)

    cv2.ellipse(animal, p(0, 0), (int(140 * u), int(60 * u)), 0, 0, 360, brown, -1)
    for dx in (-110, -70, 70, 110):
        cv2.rectangle(animal, p(dx - 12, 20), p(dx + 12, 130), brown, -1)
    cv2.line(animal, p(110, -20), p(170, -80), brown, int(40 * u))
    cv2.ellipse(animal, p(200, -90), (int(60 * u), int(25 * u)), 20, 0, 360, brown, -1)
    cv2.fillPoly(animal, [np.array([p(160, -100), p(175, -150), p(190, -105)])], brown)
    cv2.line(animal, p(-135, -10), p(-200, 40), brown, int(10 * u))
    out["animal blob"] = animal
    out["black"] = np.zeros((h, w, 3), np.uint8)
    out["white"] = np.full((h, w, 3), 255, np.uint8)
    return out
