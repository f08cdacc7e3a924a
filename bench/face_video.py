"""Make a Y4M video of real faces for Chromium's fake camera.

FER2013 face crops (48x48 gray) from ``tests/fixtures/faces`` are upscaled to about 200x200 and
placed on a 640x480 mid-grey background; the face drifts slowly and the image switches every
second. Chromium plays the file in a loop with::

    chromium --use-fake-device-for-media-stream --use-file-for-fake-video-capture=OUT.y4m

Usage::

    python bench/face_video.py OUT.y4m --seconds 4 [--fps 15] [--faces DIR]

``make_frames(seconds, fps)`` returns the BGR frames for tests that want them directly.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 480
FACE_SIZE = 200
BACKGROUND = 128
FACES_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "faces"


def face_frame(i: int = 0, x: int = 220, y: int = 120, side: int = 200,
               size: tuple[int, int] = (WIDTH, HEIGHT)
               ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A BGR frame with one upscaled real face (fixture ``i``) at ``(x, y)`` on mid-grey;
    returns the frame and the face's box."""
    faces = [f for p in sorted(FACES_DIR.glob("*.jpg"))
             if (f := cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)) is not None]
    w, h = size
    frame = np.full((h, w, 3), BACKGROUND, np.uint8)
    face = cv2.resize(faces[i % len(faces)], (side, side), interpolation=cv2.INTER_CUBIC)
    frame[y : y + side, x : x + side] = face[..., None]
    return frame, (x, y, side, side)


def load_faces(faces_dir: Path | str = FACES_DIR, size: int = FACE_SIZE) -> list[np.ndarray]:
    """The face images of ``faces_dir`` (sorted by name), gray, upscaled to ``size`` x ``size``."""
    paths = sorted(p for p in Path(faces_dir).iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    faces = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        faces.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC))
    if not faces:
        raise FileNotFoundError(f"no face images in {faces_dir}")
    return faces


def make_frames(seconds: float = 4.0, fps: int = 15, faces_dir: Path | str = FACES_DIR,
                size: int = FACE_SIZE) -> list[np.ndarray]:
    """``seconds * fps`` BGR frames (480x640x3 uint8), one face per frame, switching each second."""
    faces = load_faces(faces_dir, size)
    n = max(1, int(round(seconds * fps)))
    cx0, cy0 = (WIDTH - size) // 2, (HEIGHT - size) // 2
    # Slow drift: an ellipse of +-120 x +-60 pixels, one loop every 8 seconds.
    ax, ay = min(120, cx0), min(60, cy0)
    frames = []
    for i in range(n):
        t = i / fps
        face = faces[int(t) % len(faces)]
        x = int(round(cx0 + ax * math.sin(2 * math.pi * t / 8.0)))
        y = int(round(cy0 + ay * math.sin(4 * math.pi * t / 8.0)))
        frame = np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)
        frame[y : y + size, x : x + size] = face[:, :, None]
        frames.append(frame)
    return frames


def write_y4m(path: Path | str, frames: list[np.ndarray], fps: int = 15) -> Path:
    """Write BGR frames as a 4:2:0 Y4M file (the format Chromium's fake camera reads)."""
    path = Path(path)
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def make_video(path: Path | str, seconds: float = 4.0, fps: int = 15,
               faces_dir: Path | str = FACES_DIR) -> Path:
    """Generate the face video at ``path``; returns the path."""
    return write_y4m(path, make_frames(seconds, fps, faces_dir), fps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output .y4m file")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--faces", default=str(FACES_DIR), help="folder of face images")
    args = ap.parse_args(argv)
    path = make_video(args.out, args.seconds, args.fps, args.faces)
    n = max(1, int(round(args.seconds * args.fps)))
    print(f"wrote {path} ({n} frames, {WIDTH}x{HEIGHT} @ {args.fps} fps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
