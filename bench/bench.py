"""``python run.py bench``: classifier runtimes, the isolated frame pipeline, the live server.

One run prints plain-text tables (and writes them to ``<out>/bench.txt``):

1. Classifier latency (median ms) and faces/s at batch 1, 8, 32 for every backend the model
   folder supports, against Keras eager ``model(x)`` and ``model.predict(x)``.
2. The isolated pipeline, one thread, frame after frame of the client video: H264 decode ->
   BGR -> BlazeFace -> crop -> classify with the ``auto`` backend (the server's choice); wall
   and CPU milliseconds per frame.
3. The live server (``run.py serve`` in a subprocess, so its CPU time is its own) over loopback
   with 1, 2, 4, 8 aiortc clients, each relaying the client video (``--video``: real faces from
   the dev clips by default, see ``bench.videos``; pre-encoded, no encoding in the clients) and
   reading the result messages from its data channel; server CPU milliseconds per processed
   frame and per second of one client's video, and the live overhead over the isolated path.
   With ``--repeat N`` the client counts run in N interleaved rounds and each reports the run
   with its median total (one run decides little on a machine whose speed drifts).
4. A sweep of the batcher's ``--max-batch`` and ``--max-wait-ms`` with 8 clients (fewer when
   fewer are asked for).

and the goals of issues 4 and 16 with PASS/FAIL. Latency is the server's ``latency_ms`` (frame
arrival to result sent). Clients and server share this machine's cores, so client CPU is reported
too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import aiortc  # noqa: F401  # before TensorFlow: pylibsrtp segfaults if imported after TF
import numpy as np

from bench.cpu import cpu_model
from bench.rtc_client import RtcClient

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
FPS = 15
BATCHES = (1, 8, 32)
GOAL_ONE_P95_MS = 30.0
GOAL_MANY_CLIENTS = 8
GOAL_MANY_FPS = 12.0
#: Overload (issue 16): more clients than 8 keep the total, and each a fair share.
GOAL_FAIR = 0.8
GOAL_OVERLOAD_P95_MS = 250.0
GOAL_MANY_P95_MS = 100.0
GOAL_LIVE_FRACTION = 0.8
GOAL_SPEEDUP = 25.0


# --------------------------------------------------------------------------- output

class Report:
    """Prints sections as they finish and keeps them for ``bench.txt``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        print(text, flush=True)
        self.parts.append(text)
        self.path.write_text("\n".join(self.parts) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table; floats keep the precision they were formatted with."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                         enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)]
                     + [line(r) for r in cells[1:]])


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def fmt(v: float, digits: int = 1) -> str:
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


# --------------------------------------------------------------------------- inputs

def face_batch(n: int) -> np.ndarray:
    """``n`` real face crops (the fixture faces, repeated) as classifier input."""
    import cv2

    from bench.face_video import FACES_DIR
    from core.preprocess import preprocess_face, to_batch

    faces = []
    for p in sorted(FACES_DIR.glob("*.jpg")):
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is not None:
            faces.append(preprocess_face(img))
    return to_batch([faces[i % len(faces)] for i in range(n)])


# --------------------------------------------------------------------------- 1. classifiers

def time_calls(fn: Callable[[np.ndarray], Any], x: np.ndarray, budget_s: float,
               min_reps: int = 5, warmup: int = 3) -> list[float]:
    """Wall times (ms) of ``fn(x)``: ``warmup`` untimed calls, then at least ``min_reps`` and
    as many more as fit in ``budget_s``."""
    for _ in range(warmup):
        fn(x)
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < end and len(times) < 2000):
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


@dataclass
class ClassifierResult:
    name: str
    ms: dict[int, float] = field(default_factory=dict)  # batch -> median ms


def bench_classifiers(model_dir: str, budget_s: float, rep: Report) -> dict[str, ClassifierResult]:
    """Section 1; returns the medians of every implementation."""
    from core.runtimes import BACKENDS, ModelError, choose_backend, load_classifier

    # The baselines use the Keras backend's model (this module does not import TF itself).
    model = load_classifier(model_dir, "keras").model  # type: ignore[attr-defined]
    impls: dict[str, Callable[[np.ndarray], Any]] = {
        "keras eager model(x)": lambda x: model(x, training=False).numpy(),
        "keras model.predict(x)": lambda x: model.predict(x, verbose=0),
    }
    notes = []
    for name in BACKENDS:
        try:
            clf = load_classifier(model_dir, name)
        except ModelError as exc:
            notes.append(f"  {name}: not available ({exc})")
            continue
        if not hasattr(clf, "threads"):
            impls[f"{name} ({clf.device}, XLA)"] = clf.predict_batch
            continue
        impls[f"{name} ({clf.device}, {clf.threads} threads)"] = clf.predict_batch
        if clf.threads > 1:  # the server's detection threads compete for the same cores
            impls[f"{name} ({clf.device}, 1 thread)"] = load_classifier(
                model_dir, name, threads=1).predict_batch
    results: dict[str, ClassifierResult] = {}
    for label, fn in impls.items():
        r = results[label] = ClassifierResult(label)
        for b in BATCHES:
            r.ms[b] = statistics.median(time_calls(fn, face_batch(b), budget_s))
    eager, pred = results["keras eager model(x)"], results["keras model.predict(x)"]
    rows = []
    for label, r in results.items():
        for b in BATCHES:
            ms = r.ms[b]
            rows.append([label if b == BATCHES[0] else "", b, fmt(ms, 2), fmt(b / ms * 1000, 0),
                         fmt(eager.ms[b] / ms, 1) + "x", fmt(pred.ms[b] / ms, 1) + "x"])
    auto = choose_backend(model_dir, "auto")
    text = [f"== 1. Classifier ({Path(model_dir).name}, {os.cpu_count()} cores; median of "
            f">= 5 calls / {budget_s:.1f} s per cell; auto backend here: {auto})",
            table(["implementation", "batch", "median ms", "faces/s", "vs eager",
                   "vs predict"], rows)]
    text += notes
    text.append(accuracy_note(model_dir))
    rep.add("\n".join(text) + "\n")
    impls.clear()  # drop the models (closures) before the live runs
    gc.collect()
    return results


def accuracy_note(model_dir: str) -> str:
    from core.model_dir import read_metadata

    metrics = read_metadata(model_dir).get("metrics") or {}
    b = metrics.get("backends") or {}
    if not b:
        test = (metrics.get("test") or {}).get("accuracy")
        return (f"accuracy: keras test {fmt(test, 4) if test is not None else 'n/a'}; LiteRT "
                "accuracy not recorded (run `python run.py convert --model DIR --data PATH`)")
    parts = [f"{k} {v.get('accuracy', float('nan')):.4f}" for k, v in b.items()]
    split = next((v.get("split") for v in b.values() if v.get("split")), "test")
    n = next((v.get("n") for v in b.values() if v.get("n")), "?")
    return f"accuracy on {split}, n={n}: " + ", ".join(parts)


# --------------------------------------------------------------------------- 2. pipeline

@dataclass
class PipelineResult:
    backend: str
    total_ms: float
    stages: dict[str, float]
    faces_per_frame: float
    #: Process CPU milliseconds per frame, decoding included.
    cpu_ms: float = 0.0
    #: Of which classification (every face of every frame classified).
    classify_cpu_ms: float = 0.0

    @property
    def fps(self) -> float:
        return 1000.0 / self.total_ms


def _decode_ms(video: Path, n: int) -> tuple[float, float]:
    """Median wall ms and mean CPU ms per frame to decode ``video``'s H264 into BGR arrays
    (what the server does for each frame it processes)."""
    import av

    from core.video import frame_to_bgr

    walls: list[float] = []
    c0 = time.process_time()
    with av.open(str(video)) as c:
        t = time.perf_counter()
        for frame in c.decode(video=0):
            frame_to_bgr(frame)
            now = time.perf_counter()
            walls.append((now - t) * 1e3)
            t = now
            if len(walls) >= n:
                break
    return statistics.median(walls), (time.process_time() - c0) * 1e3 / max(1, len(walls))


def bench_pipeline(model_dir: str, budget_s: float, rep: Report, video: Path,
                   video_note: str) -> PipelineResult:
    """Section 2: one thread, frame after frame of the client video: H264 decode -> BGR ->
    detection + crop -> classification; wall and CPU milliseconds per frame."""
    from bench.videos import decoded_frames
    from core.pipeline import FacePipeline
    from core.runtimes import load_classifier

    clf = load_classifier(model_dir, "auto")
    pipe = FacePipeline()
    scan = pipe.scanner()  # as a live session: the scan pass's windows on alternate frames
    frames = decoded_frames(video, 300)
    dec_wall, dec_cpu = _decode_ms(video, 300)
    stages: dict[str, list[float]] = {"detect+crop": [], "classify": []}
    totals: list[float] = []
    faces = 0
    for img in frames[:3]:  # warm up (interpreters, caches)
        ff = pipe.faces(img, scan)
        clf.predict_batch(ff.batch)
    end = time.perf_counter() + budget_s
    i = 0
    c0 = time.process_time()
    cls_cpu = 0.0
    while i < 30 or time.perf_counter() < end:
        img = frames[i % len(frames)]
        t1 = time.perf_counter()
        ff = pipe.faces(img, scan)
        t2 = time.perf_counter()
        p2 = time.process_time()
        if ff.boxes:
            clf.predict_batch(ff.batch)
        cls_cpu += time.process_time() - p2
        t3 = time.perf_counter()
        stages["detect+crop"].append((t2 - t1) * 1e3)
        stages["classify"].append((t3 - t2) * 1e3)
        totals.append((t3 - t1) * 1e3)
        faces += len(ff.boxes)
        i += 1
    cpu_ms = (time.process_time() - c0) * 1e3 / i + dec_cpu
    res = PipelineResult(clf.backend, statistics.median(totals) + dec_wall,
                         {"decode H264 -> BGR": dec_wall,
                          **{k: statistics.median(v) for k, v in stages.items()}},
                         faces / i, cpu_ms, cls_cpu * 1e3 / i)
    rows = [[k, fmt(v, 2)] for k, v in res.stages.items()]
    rows.append(["total (median)", fmt(res.total_ms, 2)])
    rep.add("\n".join([
        f"== 2. Isolated pipeline ({video_note}; one thread, backend {clf.backend}; "
        f"{i} frames, {res.faces_per_frame:.2f} faces/frame)",
        table(["stage", "median ms"], rows),
        f"isolated pipeline: {res.fps:.1f} fps (one thread); {res.cpu_ms:.2f} CPU ms per frame "
        f"(decode included)"]) + "\n")
    return res


# --------------------------------------------------------------------------- 3. live server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> ``{name: value}`` (label sets summed)."""
    out: dict[str, float] = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        key, _, value = ln.rpartition(" ")
        name = key.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the bench process dies, however it
    dies (a killed bench must not leave its server running)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """``run.py serve`` as a subprocess on a free loopback port (stopped by :meth:`stop`, or by
    the kernel if the bench process is killed)."""

    def __init__(self, model_dir: str, out: Path, max_batch: int, max_wait_ms: float,
                 backend: str = "auto", tag: str = "live", flags: Sequence[str] = (),
                 sessions: int = 16) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = out / f"server-{tag}-b{max_batch}-w{max_wait_ms:g}.log"
        cmd = [sys.executable, str(ROOT / "run.py"), "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--model", str(model_dir), "--backend", backend,
               "--max-sessions", str(sessions), "--max-sessions-per-ip", str(sessions),
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
               "--log-level", "WARNING", *flags]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        self.health: dict = {}

    async def wait_ready(self, http, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); see {self.log_path}:"
                                   f"\n{self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                async with http.get(self.url + "/healthz") as r:
                    if r.status == 200:
                        self.health = await r.json()
                        return self.health
            await asyncio.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout:.0f} s; see {self.log_path}")

    async def metrics(self, http) -> dict[str, float]:
        async with http.get(self.url + "/metrics") as r:
            return parse_metrics(await r.text())

    async def sessions(self, http) -> int:
        async with http.get(self.url + "/healthz") as r:
            return int((await r.json())["sessions"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@dataclass
class LiveResult:
    clients: int
    seconds: float
    fps: list[float]
    latencies: list[float]
    received: float
    processed: float
    dropped: float
    server_cpu: float  # % of one core
    client_cpu: float
    mean_batch: float
    faces_per_result: float
    errors: int
    #: Share of the faces whose probabilities were reused (the classification plan), and the
    #: server's reuse age at the end of the window (server.adapt).
    reused: float = 0.0
    reuse_s: float = 0.0
    #: Share of the processed frames detected with the fast detector (the server shedding
    #: detection under overload, server.adapt).
    shed: float = 0.0
    #: With ``--repeat``: (total results/s, p95 ms) of every run of this client count, in order.
    rounds: list[tuple[float, float]] = field(default_factory=list)

    @property
    def total_fps(self) -> float:
        return sum(self.fps)

    @property
    def p50(self) -> float:
        return pct(self.latencies, 50)

    @property
    def p95(self) -> float:
        return pct(self.latencies, 95)

    @property
    def cpu_ms_per_frame(self) -> float:
        """Server CPU milliseconds per processed frame (a machine-portable cost)."""
        return 10.0 * self.server_cpu / max(self.processed, 1e-9)

    @property
    def cpu_ms_per_client_s(self) -> float:
        """Server CPU milliseconds per second of one client's video."""
        return 10.0 * self.server_cpu / max(self.clients, 1)


async def live_run(server: Server, http, video: Path, n: int, seconds: float,
                   warmup: float) -> LiveResult:
    """``n`` clients stream for ``warmup + seconds``; statistics over the last ``seconds``."""
    clients = [RtcClient(server.url, video=video) for _ in range(n)]
    try:
        await asyncio.gather(*(c.connect(http) for c in clients))
        deadline = time.monotonic() + 30.0
        while not all(c.results for c in clients):
            if time.monotonic() > deadline:
                got = sum(1 for c in clients if c.results)
                raise RuntimeError(f"only {got}/{n} clients got results within 30 s")
            await asyncio.sleep(0.05)
        await asyncio.sleep(warmup)
        m0, s0, c0, t0 = await server.metrics(http), proc_cpu_s(server.proc.pid), self_cpu_s(), \
            time.monotonic()
        await asyncio.sleep(seconds)
        m1, s1, c1, t1 = await server.metrics(http), proc_cpu_s(server.proc.pid), self_cpu_s(), \
            time.monotonic()
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    wall = t1 - t0
    wins = [c.window(t0, t1) for c in clients]

    def d(name: str) -> float:
        return m1.get(name, 0.0) - m0.get(name, 0.0)

    nres = sum(len(w) for w in wins)
    return LiveResult(
        clients=n, seconds=wall, fps=[len(w) / wall for w in wins],
        latencies=[float(m["latency_ms"]) for w in wins for m in w],
        received=d("facedapps_frames_received_total") / wall,
        processed=d("facedapps_frames_processed_total") / wall,
        dropped=d("facedapps_frames_dropped_total"),
        server_cpu=100.0 * (s1 - s0) / wall, client_cpu=100.0 * (c1 - c0) / wall,
        mean_batch=d("facedapps_batch_size_sum") / max(1.0, d("facedapps_batch_size_count")),
        faces_per_result=sum(len(m["faces"]) for w in wins for m in w) / max(1, nres),
        errors=sum(len(c.errors) for c in clients),
        reused=d("facedapps_faces_reused_total") / max(1.0, d("facedapps_faces_total")),
        reuse_s=m1.get("facedapps_reuse_seconds", 0.0),
        shed=d("facedapps_frames_shed_total") / max(1.0, d("facedapps_frames_processed_total")))


async def wait_sessions_closed(server: Server, http, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while await server.sessions(http) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def median_run(runs: Sequence[LiveResult]) -> LiveResult:
    """Of several runs of one client count, the one with the median total results/s (the lower
    middle one of an even number), carrying every run's total and p95 in ``rounds``."""
    pick = sorted(runs, key=lambda r: r.total_fps)[(len(runs) - 1) // 2]
    return dataclasses.replace(pick, rounds=[(r.total_fps, r.p95) for r in runs])


async def bench_live(model_dir: str, out: Path, video: Path, counts: Sequence[int],
                     seconds: float, warmup: float, max_batch: int, max_wait_ms: float,
                     backend: str = "auto", tag: str = "live", flags: Sequence[str] = (),
                     repeat: int = 1) -> tuple[list[LiveResult], dict]:
    """One server; each client count in ``counts`` runs once per round, ``repeat`` rounds
    (interleaved, so a machine that drifts affects every count alike); each count's result is
    its :func:`median_run` (with one round, that round's run)."""
    import aiohttp

    server = Server(model_dir, out, max_batch, max_wait_ms, backend, tag, flags,
                    sessions=max(16, *counts))
    runs: list[list[LiveResult]] = [[] for _ in counts]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            health = await server.wait_ready(http)
            for _ in range(repeat):
                for i, n in enumerate(counts):
                    r = await live_run(server, http, video, n, seconds, warmup)
                    runs[i].append(r)
                    log.info("%d clients: %.1f fps total, p95 %.1f ms", n, r.total_fps, r.p95)
                    await wait_sessions_closed(server, http)
    finally:
        server.stop()
    return [median_run(rs) for rs in runs], health


def rounds_lines(results: Sequence[LiveResult]) -> list[str]:
    """One line per client count run more than once: every run's total and p95."""
    return [f"{r.clients} client(s), {len(r.rounds)} runs: total "
            + " / ".join(fmt(t) for t, _ in r.rounds) + " results/s, p95 "
            + " / ".join(fmt(p, 0) for _, p in r.rounds) + " ms (the row above: the median)"
            for r in results if len(r.rounds) > 1]


def live_table(results: Sequence[LiveResult], isolated_fps: float) -> str:
    rows = []
    for r in results:
        rows.append([r.clients, fmt(min(r.fps)), fmt(statistics.mean(r.fps)), fmt(r.total_fps),
                     fmt(r.p50), fmt(r.p95), fmt(r.received), f"{int(r.dropped)}",
                     fmt(100 * r.dropped / max(1.0, r.received * r.seconds), 0) + "%",
                     fmt(r.mean_batch, 2), fmt(r.faces_per_result, 2),
                     fmt(r.server_cpu, 0) + "%", fmt(r.cpu_ms_per_frame, 2),
                     fmt(r.cpu_ms_per_client_s, 0), fmt(r.client_cpu, 0) + "%",
                     fmt(100 * r.total_fps / isolated_fps, 0) + "%",
                     fmt(100 * r.reused, 0) + "%", fmt(r.reuse_s, 3),
                     fmt(100 * r.shed, 0) + "%"])
    return table(["clients", "fps/client min", "mean", "total fps", "p50 ms", "p95 ms",
                  "recv fps", "dropped", "drop %", "batch", "faces", "server CPU",
                  "CPU ms/frame", "CPU ms/client-s", "client CPU", "vs isolated",
                  "faces reused", "reuse s at end", "shed"], rows)


def overhead_lines(live: Sequence[LiveResult], pipeline: PipelineResult) -> list[str]:
    """The live path's CPU per frame beyond the isolated pipeline's (counted with the share of
    classifications the server reused taken out): aiortc receive (RTP, jitter buffer), the data
    channel, the event loop and the threads' hand-offs."""
    if not live:
        return []
    r = min(live, key=lambda x: x.clients)
    # The isolated loop classifies every face; the server reuses a share of them (r.reused).
    same = pipeline.cpu_ms - pipeline.classify_cpu_ms * r.reused
    extra = r.cpu_ms_per_frame - same
    return [f"live overhead: {r.cpu_ms_per_frame:.2f} server CPU ms per processed frame with "
            f"{r.clients} client(s) vs {same:.2f} isolated (decode included; "
            f"{pipeline.cpu_ms:.2f} less {r.reused:.0%} of its {pipeline.classify_cpu_ms:.2f} "
            f"ms of classification, the share the server reused): {extra:+.2f} ms for aiortc "
            f"receive, data channel, event loop and threads"]


# --------------------------------------------------------------------------- 4. sweep

async def bench_sweep(model_dir: str, out: Path, video: Path, clients: int, seconds: float,
                      warmup: float, batches: Sequence[int], waits: Sequence[float],
                      backend: str, flags: Sequence[str] = ()
                      ) -> list[tuple[int, float, LiveResult]]:
    rows = []
    for b in batches:
        for w in waits:
            res, _ = await bench_live(model_dir, out, video, [clients], seconds, warmup, b, w,
                                      backend, tag="sweep", flags=flags)
            rows.append((b, w, res[0]))
    return rows


def sweep_table(rows: Sequence[tuple[int, float, LiveResult]]) -> str:
    return table(["max batch", "max wait ms", "fps/client min", "mean", "total fps", "p50 ms",
                  "p95 ms", "batch", "server CPU"],
                 [[b, f"{w:g}", fmt(min(r.fps)), fmt(statistics.mean(r.fps)), fmt(r.total_fps),
                   fmt(r.p50), fmt(r.p95), fmt(r.mean_batch, 2), fmt(r.server_cpu, 0) + "%"]
                  for b, w, r in rows])


# --------------------------------------------------------------------------- goals

def goal_lines(clf: dict[str, ClassifierResult], auto: str, pipeline: PipelineResult | None,
               live: Sequence[LiveResult], model_dir: str) -> list[str]:
    def mark(ok: bool | None) -> str:
        return "n/a " if ok is None else ("PASS" if ok else "FAIL")

    by_n = {r.clients: r for r in live}
    lines = ["== Goals (issues 4 and 16)"]
    one = by_n.get(1)
    lines.append(f"[{mark(None if one is None else one.p95 <= GOAL_ONE_P95_MS)}] one client "
                 f"p95 <= {GOAL_ONE_P95_MS:g} ms: "
                 + ("not measured" if one is None else f"p95 {one.p95:.1f} ms"))
    many = by_n.get(GOAL_MANY_CLIENTS)
    ok = None if many is None else (min(many.fps) >= GOAL_MANY_FPS
                                    and many.p95 <= GOAL_MANY_P95_MS)
    lines.append(f"[{mark(ok)}] {GOAL_MANY_CLIENTS} clients each >= {GOAL_MANY_FPS:g} fps and "
                 f"p95 <= {GOAL_MANY_P95_MS:g} ms: "
                 + ("not measured (--quick)" if many is None else
                    f"min {min(many.fps):.1f} fps, p95 {many.p95:.1f} ms"))
    if pipeline is not None and live:
        best = max(live, key=lambda r: r.total_fps)
        frac = best.total_fps / pipeline.fps
        offered = best.received / pipeline.fps
        lines.append(f"[{mark(frac >= GOAL_LIVE_FRACTION)}] live >= "
                     f"{GOAL_LIVE_FRACTION:.0%} of isolated: {best.total_fps:.1f} fps with "
                     f"{best.clients} clients = {frac:.0%} of {pipeline.fps:.1f} fps "
                     f"(offered load {best.received:.1f} fps = {offered:.0%} of isolated; "
                     f"{best.total_fps / max(best.received, 1e-9):.0%} of it processed)")
    else:
        lines.append("[n/a ] live >= 80% of isolated: not measured")
    # one line per count above 8 (the goal is at 16; more clients are shown the same way)
    over = sorted((r for r in live if r.clients > GOAL_MANY_CLIENTS), key=lambda r: r.clients)
    if many is not None:
        for o in over:
            fair = min(o.fps) / max(statistics.mean(o.fps), 1e-9)
            ok = (o.total_fps >= many.total_fps and fair >= GOAL_FAIR
                  and o.p95 <= GOAL_OVERLOAD_P95_MS)
            lines.append(f"[{mark(ok)}] overload ({o.clients} clients): total >= "
                         f"{GOAL_MANY_CLIENTS} clients', every client >= "
                         f"{GOAL_FAIR:g}x the mean, p95 <= {GOAL_OVERLOAD_P95_MS:g} ms: "
                         f"{o.total_fps:.1f} vs {many.total_fps:.1f} fps, min/mean {fair:.2f}, "
                         f"p95 {o.p95:.1f} ms")
    eager = clf.get("keras eager model(x)")
    fast = next((r for k, r in clf.items() if k.startswith(auto + " ")), None)
    if eager and fast:
        s = eager.ms[1] / fast.ms[1]
        lines.append(f"[{mark(s >= GOAL_SPEEDUP)}] classifier ({auto}) batch 1 >= "
                     f"{GOAL_SPEEDUP:g}x faster than Keras eager: {eager.ms[1]:.2f} ms -> "
                     f"{fast.ms[1]:.2f} ms = {s:.1f}x; {accuracy_note(model_dir)}")
    return lines


# --------------------------------------------------------------------------- main

def _ints(text: str) -> list[int]:
    """Comma-separated integers, each once, in their first order."""
    return list(dict.fromkeys(int(v) for v in str(text).split(",") if v.strip()))


def main(args: argparse.Namespace) -> int:
    """Run every section; returns 0 (goals are reported, not enforced), 2 on a setup error."""
    from core.errors import ModelError
    from core.model_dir import read_metadata
    from core.runtimes import choose_backend

    quick = bool(getattr(args, "quick", False))
    model_dir = str(args.model)
    out = Path(getattr(args, "out", None) or ROOT / "bench-out")
    out.mkdir(parents=True, exist_ok=True)
    counts = _ints(getattr(args, "clients", None) or ("1,2" if quick else "1,2,4,8"))
    seconds = float(getattr(args, "seconds", None) or (5.0 if quick else 20.0))
    warmup = 1.0 if quick else 3.0
    live_on = not getattr(args, "no_live", False)
    sweep_on = live_on and not quick and not getattr(args, "no_sweep", False)
    backend = getattr(args, "backend", None) or "auto"
    try:
        read_metadata(model_dir)
        auto = choose_backend(model_dir, backend)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rep = Report(out / "bench.txt")
    from bench.videos import VideoMissing, bench_video

    choice = getattr(args, "video", None) or "real"
    try:
        video, video_note = bench_video(choice, out, max(40.0, warmup + seconds + 15))
    except VideoMissing as exc:
        if choice != "real":
            print(f"error: {exc}", file=sys.stderr)
            return 2
        video, video_note = bench_video("synthetic", out, max(40.0, warmup + seconds + 15))
        video_note += f" (the real video needs ../shared: {exc})"
    rep.add(f"FaceDApps bench {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: model {model_dir}, "
            f"{cpu_model()}, {'quick' if quick else 'full'} run; "
            f"client video: {video_note}\n")
    clf = bench_classifiers(model_dir, 0.4 if quick else 1.5, rep)
    pipeline = bench_pipeline(model_dir, 2.0 if quick else 5.0, rep, video, video_note)
    live: list[LiveResult] = []
    if live_on:
        from server.config import ServerConfig

        knobs = ServerConfig()  # the server's defaults
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in (
            ("infer_threads", getattr(args, "infer_threads", 0)),
            ("detect_workers", getattr(args, "detect_workers", 0))) if v]
        flags += list(getattr(args, "server_flag", None) or [])
        repeat = int(getattr(args, "repeat", 1) or 1)
        live, health = asyncio.run(bench_live(model_dir, out, video, counts, seconds, warmup,
                                              knobs.max_batch_size, knobs.max_wait_ms, backend,
                                              flags=flags, repeat=repeat))
        rep.add("\n".join([
            f"== 3. Live server over loopback ({health.get('backend')} on "
            f"{health.get('device')}, {health.get('infer_threads')} inference threads, "
            f"{health.get('detect_workers')} detection workers; max batch "
            f"{knobs.max_batch_size}, max wait {knobs.max_wait_ms:g} ms; server flags "
            f"{' '.join(flags) or 'none'}; detector {health.get('detector')}; each client relays "
            f"{video_note}; {seconds:g} s measured after {warmup:g} s warm-up"
            + (f"; {repeat} interleaved rounds, each count's median run" if repeat > 1 else "")
            + ")",
            live_table(live, pipeline.fps),
            *rounds_lines(live),
            "fps: results per second each client received; latency: server frame arrival -> "
            "result; CPU: % of one core; CPU ms/frame: server CPU per processed frame; CPU "
            "ms/client-s: server CPU per second of one client's video; vs isolated: total fps "
            "/ isolated pipeline fps; faces reused: share of faces given their track's last "
            "probabilities instead of a classifier call; reuse s at end: the server's "
            "load-adaptive reuse age when the window closed; shed: share of processed frames "
            "detected with the fast detector (overload)",
            *overhead_lines(live, pipeline)]) + "\n")
    if live_on and getattr(args, "threads_sweep", False):
        n = max(counts)
        cores = os.cpu_count() or 1
        combos = sorted({(i, d) for i in (1, cores) for d in (1, cores)})
        trows = []
        for i, d in combos:
            res, _ = asyncio.run(bench_live(
                model_dir, out, video, [n], seconds, warmup,
                knobs.max_batch_size, knobs.max_wait_ms, backend, tag=f"threads-i{i}-d{d}",
                flags=[f"--infer-threads={i}", f"--detect-workers={d}"]))
            trows.append([i, d, fmt(min(res[0].fps)), fmt(res[0].total_fps), fmt(res[0].p95),
                          fmt(res[0].server_cpu, 0) + "%",
                          fmt(100 * res[0].total_fps / pipeline.fps, 0) + "%"])
        rep.add("\n".join([
            f"== 3b. Threads ({n} clients, {seconds:g} s each; inference = classifier runtime "
            f"threads, detection = conversion + detection workers)",
            table(["inference", "detection", "fps/client min", "total fps", "p95 ms",
                   "server CPU", "vs isolated"], trows)]) + "\n")
    if sweep_on:
        n = min(8, max(counts))
        rows = asyncio.run(bench_sweep(model_dir, out, video, n, 6.0, 2.0,
                                       (1, 4, 8, 16), (0.0, 2.0, 4.0, 8.0), backend))
        top = max(r[2].total_fps for r in rows)
        best = min((r for r in rows if r[2].total_fps >= 0.97 * top), key=lambda r: r[2].p95)
        rep.add("\n".join([
            f"== 4. Batching sweep ({n} clients, 6 s each after 2 s warm-up)",
            sweep_table(rows),
            f"lowest p95 within 3% of the best throughput: --max-batch {best[0]} "
            f"--max-wait-ms {best[1]:g}"]) + "\n")
    rep.add("\n".join(goal_lines(clf, auto, pipeline, live, model_dir)))
    print(f"\n(written to {rep.path})")
    return 0
