"""``python run.py bench-ray``: what the Ray Serve hop costs, beside the embedded classifier.

One run prints plain-text tables (and writes them to ``<out>/bench-ray.txt``):

1. Latency per classifier call at batch 1 and 8: embedded (``core.runtimes``, one runtime
   thread, as the server runs it) vs through the tier (``server.remote.RemoteClassifier``: the
   edge's path, uint8 on the wire, a ``DeploymentHandle`` call, ``@serve.batch``, the replica's
   runtime). The difference is the Ray hop. Also the caller's CPU per call: what classifying
   remotely costs an edge.
2. Throughput in crops/s: embedded with one and two threads (one runtime each), and the tier
   with 1 and 2 replicas, loaded by many concurrent callers sending batches of 1 (many small
   edges: ``@serve.batch`` merges them), of 8 or of 32 (busy edges).

Without ``--ray`` the bench starts a local Ray (all cores, no dashboard, a small object store)
and stops it at the end; with ``--ray ADDRESS`` it deploys its own application
(``facedapps-bench``) on that cluster and deletes it at the end. Callers and replicas share
this machine's cores in the local case: read the 2-replica figures with that in mind.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from bench.cpu import cpu_model
from cluster import tier
from core.preprocess import INPUT_SIZE
from core.runtimes import load_classifier
from server.remote import RemoteClassifier

log = logging.getLogger(__name__)

APP = "facedapps-bench"
BATCHES = (1, 8)
Predict = Callable[[np.ndarray], np.ndarray]


def crops(n: int, seed: int = 0) -> np.ndarray:
    """``n`` crops of whole numbers 0..255 (what the preprocessing yields), float32."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, INPUT_SIZE, INPUT_SIZE, 1)).astype(np.float32)


def latency(predict: Predict, batch: int, calls: int) -> dict[str, float]:
    """Median and p90 ms per call, and the calling process's CPU ms per call."""
    x = crops(batch)
    for _ in range(5):
        predict(x)
    times = []
    cpu0 = time.process_time()
    for _ in range(calls):
        t0 = time.perf_counter()
        predict(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    cpu = (time.process_time() - cpu0) * 1000.0 / calls
    times.sort()
    return {"median": statistics.median(times), "p90": times[int(0.9 * (len(times) - 1))],
            "cpu": cpu}


def throughput(predicts: list[Predict], batch: int, seconds: float) -> float:
    """Crops per second with one caller thread per entry of ``predicts``, each sending
    ``batch`` crops per call back to back for ``seconds``."""
    return measure(predicts, batch, seconds)[0]


def replica_totals(handle) -> np.ndarray:
    """CPU seconds, requests and model calls so far, summed over every replica of the tier."""
    return np.array([[r["cpu_s"], r["requests"], r["batches"]]
                     for r in tier.describe(handle, 30.0)]).sum(axis=0)


def tier_throughput(remote: RemoteClassifier, callers: int, batch: int,
                    seconds: float) -> tuple[float, float, float, float]:
    """The tier's crops/s with ``callers`` concurrent callers; the CPU ms per crop of the
    callers (this process: the edge's share) and of the replicas; and the mean requests per
    model call (how much ``@serve.batch`` merged)."""
    r0 = replica_totals(remote.handle)
    rate, caller_ms, n = measure([remote.predict_batch] * callers, batch, seconds)
    cpu_s, requests, batches = replica_totals(remote.handle) - r0
    return rate, caller_ms, cpu_s * 1000.0 / max(1, n), requests / max(1.0, batches)


def wait_replicas(remote: RemoteClassifier, n: int, timeout_s: float = 60.0) -> None:
    """Wait until the handle reaches ``n`` replicas (Serve tells handles of new replicas a
    moment after it reports them running)."""
    deadline = time.monotonic() + timeout_s
    while len(tier.describe(remote.handle, 30.0)) < n:
        if time.monotonic() > deadline:
            raise tier.TierError(f"the handle did not see {n} replicas in {timeout_s:g} s")
        time.sleep(0.1)


def measure(predicts: list[Predict], batch: int, seconds: float) -> tuple[float, float, int]:
    """Crops/s, this process's CPU ms per crop, and the crops done (see :func:`throughput`)."""
    x = crops(batch)
    done = [0] * len(predicts)
    stop = threading.Event()
    cpu0 = time.process_time()

    def caller(i: int) -> None:
        while not stop.is_set():
            predicts[i](x)
            done[i] += batch

    threads = [threading.Thread(target=caller, args=(i,), daemon=True)
               for i in range(len(predicts))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    n = sum(done)
    return n / (time.perf_counter() - t0), (time.process_time() - cpu0) * 1000.0 / max(1, n), n


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
    body = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join([line, "-" * len(line), *body])


def start_ray(address: str | None) -> bool:
    """Connect to ``address``, or start a small local Ray. True when the bench started it."""
    import ray

    if address:
        tier.connect(address)
        return False
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False,
             object_store_memory=200 * 1024 * 1024, log_to_driver=False,
             logging_level=logging.WARNING)
    return True


def run(args: argparse.Namespace) -> list[str]:
    """The bench's measurements, as the lines of its report."""
    out = [f"bench-ray: {cpu_model()}; model {args.model}"]
    embedded = load_classifier(args.model, args.backend, threads=1)
    out.append(f"runtime {embedded.backend} (1 thread per embedded classifier / CPU replica)")
    started = start_ray(args.ray)
    try:
        cfg = tier.deploy(tier.TierConfig(model_dir=args.model, backend=args.backend,
                                          replicas=1, app_name=APP))
        remote = RemoteClassifier(tier.handle(APP), embedded.name, "ray:CPU", 60.0)

        rows = []
        for b in BATCHES:
            e = latency(embedded.predict_batch, b, args.calls)
            r = latency(remote.predict_batch, b, args.calls)
            rows.append([str(b), f"{e['median']:.2f}", f"{r['median']:.2f}",
                         f"{r['median'] - e['median']:+.2f}", f"{e['p90']:.2f}",
                         f"{r['p90']:.2f}", f"{r['cpu']:.2f}"])
        out += ["", "1. Latency per classifier call (ms): embedded vs through the tier "
                "(1 replica)", table(["batch", "embedded", "tier", "Ray hop", "emb p90",
                                      "tier p90", "edge CPU/call"], rows)]

        second = load_classifier(args.model, args.backend, threads=1)
        loads = (("many edges, batches of 1", 1, 16), ("edges sending batches of 8", 8, 4),
                 ("edges sending batches of 32", 32, 2))
        rows = []
        for label, b, callers in loads:
            emb1, emb_ms, _ = measure([embedded.predict_batch], b, args.seconds)
            emb2 = throughput([embedded.predict_batch, second.predict_batch], b, args.seconds)
            rate, caller_ms, replica_ms, merged = tier_throughput(remote, callers, b,
                                                                  args.seconds)
            rows.append([label, f"{emb1:.0f}", f"{emb2:.0f}", f"{emb_ms:.2f}", f"{rate:.0f}",
                         f"{caller_ms:.2f}", f"{replica_ms:.2f}", f"{merged:.1f}"])
        tier.deploy(replace(cfg, replicas=2))  # Serve adds the second replica
        wait_replicas(remote, 2)
        for row, (_, b, callers) in zip(rows, loads):
            rate, _, replica_ms, _ = tier_throughput(remote, callers, b, args.seconds)
            row += [f"{rate:.0f}", f"{replica_ms:.2f}"]
        out += ["", "2. Throughput (crops/s) and CPU ms per crop; embedded: one caller thread "
                "per classifier; tier: 16 (batch 1), 4 (batch 8) or 2 (batch 32) concurrent "
                "callers in this process (the edge)",
                table(["load", "emb 1", "emb 2", "emb CPU", "tier 1r", "edge CPU",
                       "replica CPU", "reqs/call", "tier 2r", "replica CPU 2r"], rows)]
    finally:
        _teardown(started)
    return out


def _teardown(started: bool) -> None:
    """Delete the bench's application; stop Ray if the bench started it."""
    import ray
    from ray import serve

    try:
        tier.delete(APP)
    except Exception:  # the cluster went away: nothing left to delete
        log.warning("could not delete %s", APP, exc_info=True)
    if started:
        serve.shutdown()
        ray.shutdown()


def main(args: argparse.Namespace) -> int:
    try:
        lines = run(args)
    except tier.TierError as exc:
        print(f"error: {exc}")
        return 2
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-ray.txt").write_text(text + "\n")
    return 0
