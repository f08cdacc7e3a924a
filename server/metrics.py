"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Counters and histograms of the live pipeline."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("facedapps_sessions", "Live sessions", ["transport"], registry=r)
        self.frames_received = Counter("facedapps_frames_received_total",
                                       "Frames received from clients", registry=r)
        self.frames_processed = Counter("facedapps_frames_processed_total",
                                        "Frames processed (result sent)", registry=r)
        self.frames_dropped = Counter("facedapps_frames_dropped_total",
                                      "Frames replaced by a newer one before processing",
                                      registry=r)
        self.faces = Counter("facedapps_faces_total", "Faces in results", registry=r)
        self.faces_reused = Counter("facedapps_faces_reused_total",
                                    "Faces whose last probabilities were reused instead of "
                                    "classifying them again", registry=r)
        self.frames_shed = Counter("facedapps_frames_shed_total",
                                   "Live frames detected with the fast detector because the "
                                   "server was overloaded", registry=r)
        self.reuse_seconds = Gauge("facedapps_reuse_seconds",
                                   "How long a tracked face's probabilities are reused now "
                                   "(grows when frames are dropped)", registry=r)
        self.errors = Counter("facedapps_errors_total", "Frames that failed", ["stage"],
                              registry=r)
        self.inference_errors = Counter("facedapps_inference_errors_total",
                                        "Calls to the remote inference tier that failed "
                                        "(their frames got an error)", registry=r)
        self.batch_size = Histogram("facedapps_batch_size", "Faces per classifier call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.batch_seconds = Histogram("facedapps_batch_seconds", "Classifier call duration",
                                       buckets=(.002, .005, .01, .02, .05, .1, .2, .5, 1),
                                       registry=r)
        self.latency = Histogram("facedapps_latency_seconds",
                                 "Frame arrival to result sent",
                                 buckets=(.005, .01, .02, .03, .05, .075, .1, .2, .5, 1, 2),
                                 registry=r)

    def on_batch(self, n: int, seconds: float) -> None:
        self.batch_size.observe(n)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
