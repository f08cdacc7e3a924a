"""Timeline: per-second buckets, exports, memory bound, thread safety."""

from __future__ import annotations

import csv
import io
import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from server import timeline as timeline_module
from server.timeline import Timeline

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
HEADER = "face_id,second,n,angry,disgust,fear,happy,sad,surprise,neutral"


def vec(k: int, p: float = 0.7) -> np.ndarray:
    v = np.full(7, (1.0 - p) / 6)
    v[k] = p
    return v


def test_buckets_per_second_with_means():
    tl = Timeline(LABELS, start=1_700_000_000.0)
    tl.add(100.0, 3, vec(3, 0.9))
    tl.add(100.5, 3, vec(3, 0.5))
    tl.add(100.99, 3, vec(6, 0.6))
    tl.add(101.2, 3, vec(4))
    tl.add(100.4, 7, vec(0))
    js = tl.to_json()
    assert js["labels"] == list(LABELS)
    assert js["start"] == 1_700_000_000.0
    assert set(js["faces"]) == {"3", "7"}
    b0, b1 = js["faces"]["3"]
    assert (b0["t"], b0["n"], b1["t"], b1["n"]) == (0, 3, 1, 1)
    expected = (vec(3, 0.9) + vec(3, 0.5) + vec(6, 0.6)) / 3
    np.testing.assert_allclose(b0["probs"], expected, atol=1e-4)
    assert b0["probs"] == [round(float(v), 4) for v in expected]
    assert js["faces"]["7"] == [{"t": 0, "n": 1, "probs": [round(float(v), 4) for v in vec(0)]}]
    json.dumps(js)  # plain JSON types only
    assert len(tl) == 3


def test_csv_header_and_rows():
    tl = Timeline(LABELS)
    tl.add(10.0, 2, vec(3))
    tl.add(12.3, 2, vec(4))
    tl.add(10.5, 1, vec(5))
    text = tl.to_csv()
    lines = text.splitlines()
    assert lines[0] == HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["face_id"], r["second"], r["n"]) for r in rows] == [
        ("1", "0", "1"), ("2", "0", "1"), ("2", "2", "1")]
    assert float(rows[1]["happy"]) == pytest.approx(0.7, abs=1e-4)
    assert rows[2]["sad"] == "0.7000"


def test_empty_timeline():
    tl = Timeline(LABELS)
    assert tl.to_json() == {"labels": list(LABELS), "start": None, "faces": {}}
    assert tl.to_csv() == HEADER + "\n"


def test_start_defaults_to_wall_clock_of_first_sample(monkeypatch):
    """``start`` is the wall clock read when the first sample arrives (not at construction),
    and later samples do not move it. The wall clock is a fake, so no tolerance is needed."""
    wall = SimpleNamespace(time=lambda: 1_700_000_000.0)
    monkeypatch.setattr(timeline_module, "time", wall)
    tl = Timeline(LABELS)
    wall.time = lambda: 1_700_000_123.5
    tl.add(5.0, 1, vec(0))
    wall.time = lambda: 1_700_009_999.0
    tl.add(6.0, 1, vec(0))
    assert tl.to_json()["start"] == 1_700_000_123.5


def test_explicit_t0_and_samples_before_it():
    tl = Timeline(LABELS, t0=50.0)
    tl.add(53.5, 1, vec(0))
    tl.add(49.5, 1, vec(1))  # slightly early stamp goes to second 0
    assert [b["t"] for b in tl.to_json()["faces"]["1"]] == [0, 3]


def test_max_seconds_keeps_the_newest():
    tl = Timeline(LABELS, max_seconds=10)
    for s in range(100):
        for f in (1, 2):
            tl.add(s + 0.25, f, vec(s % 7))
    js = tl.to_json()
    for f in ("1", "2"):
        assert [b["t"] for b in js["faces"][f]] == list(range(90, 100))
    assert len(tl) == 20
    tl.add(3.0, 1, vec(0))  # older than the window: ignored
    assert len(tl) == 20


def test_many_ids_stay_within_the_record_budget():
    tl = Timeline(LABELS, max_seconds=60, max_buckets=50)
    for i in range(1000):  # a new id every frame: flickering false detections
        tl.add(i / 15, i, vec(i % 7))
    assert len(tl) == 50
    assert len(tl.to_json()["faces"]) == 50
    assert len(tl.to_csv().splitlines()) == 51


def test_probs_length_is_checked():
    tl = Timeline(LABELS)
    with pytest.raises(ValueError):
        tl.add(0.0, 1, np.zeros(6))


def test_thread_safety_smoke():
    tl = Timeline(LABELS)
    n_threads, n_adds = 4, 500
    barrier = threading.Barrier(n_threads + 1)

    def writer(face: int) -> None:
        barrier.wait()
        for i in range(n_adds):
            tl.add(i / 100, face, vec(face))

    def reader() -> None:
        barrier.wait()
        for _ in range(50):
            tl.to_json()
            tl.to_csv()

    threads = [threading.Thread(target=writer, args=(f,)) for f in range(n_threads)]
    threads.append(threading.Thread(target=reader))
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)  # bounded: a deadlock fails below instead of hanging the run
    assert not any(th.is_alive() for th in threads), "a thread is stuck (deadlock?)"
    js = tl.to_json()
    for f in range(n_threads):
        buckets = js["faces"][str(f)]
        assert sum(b["n"] for b in buckets) == n_adds
        assert all(b["probs"][f] == pytest.approx(0.7, abs=1e-4) for b in buckets)
