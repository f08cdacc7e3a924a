"""How small can a face be and still get its label? Frame and clip accuracy of the classifier on
the labelled dev clips with each frame shrunk so that its face is H px tall.

Each clip is read at 15 fps (at most 60 frames); the face is found once in the full-size frame
(``live`` detector; frames without exactly one face are skipped); for each height the whole
frame is shrunk (area interpolation, as a distant camera would see it) and the face's box with
it, then cropped and classified as the server does. The detection box comes from the full
frame, so this measures the classifier, not the detector (``run.py bench-detect --gallery``
measures that). Clip accuracy: the majority of the frames' top labels (no filter).

    python tools/label_by_face_size.py [--clips DIR] [--model DIR]
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.faces import FaceDetector  # noqa: E402
from core.preprocess import LABELS, crop_face, to_batch  # noqa: E402
from core.runtimes import load_classifier  # noqa: E402
from core.video import frames  # noqa: E402

HEIGHTS = (0, 96, 64, 48, 40, 32, 24)  # 0: the frame as it is


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default=str(ROOT.parent / "shared" / "data" /
                                           "labeled_videos_dev"))
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    a = ap.parse_args(argv)
    labels_csv = Path(a.clips) / "labels.csv"
    if not labels_csv.exists():
        print(f"error: no labels.csv in {a.clips}", file=sys.stderr)
        return 2
    with open(labels_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    det = FaceDetector(mode="live")
    clf = load_classifier(a.model)
    right = dict.fromkeys(HEIGHTS, 0)
    seen = dict.fromkeys(HEIGHTS, 0)
    clips = dict.fromkeys(HEIGHTS, 0)
    for r in rows:
        label = LABELS.index(r["label"])
        votes: dict[int, list[int]] = {h: [] for h in HEIGHTS}
        for i, (_, frame) in enumerate(frames(Path(a.clips) / r["file"], 15)):
            if i >= 60:
                break
            found = det.detect(frame)
            if len(found) != 1:
                continue
            x, y, w, h = found[0].box
            crops = []
            for height in HEIGHTS:
                s = height / h if height else 1.0
                if s >= 1.0:
                    crops.append(crop_face(frame, found[0].box))
                    continue
                small = cv2.resize(frame, (max(1, round(frame.shape[1] * s)),
                                           max(1, round(frame.shape[0] * s))),
                                   interpolation=cv2.INTER_AREA)
                crops.append(crop_face(small, [round(x * s), round(y * s),
                                               max(1, round(w * s)), max(1, round(h * s))]))
            for height, k in zip(HEIGHTS, clf.predict_batch(to_batch(crops)).argmax(1)):
                right[height] += int(k == label)
                seen[height] += 1
                votes[height].append(int(k))
        for height in HEIGHTS:
            if votes[height]:
                clips[height] += Counter(votes[height]).most_common(1)[0][0] == label
    print("face height | frame accuracy | clips right (majority of raw labels) | frames")
    for height in HEIGHTS:
        acc = right[height] / seen[height] if seen[height] else float("nan")
        print(f"{height or 'as recorded':>11} | {acc:.3f} | {clips[height]} / {len(rows)} | "
              f"{seen[height]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
