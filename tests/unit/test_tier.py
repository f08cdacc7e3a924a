"""The inference tier's pieces that need no Ray: settings resolution, deployment options,
addresses, the wire format, the edge classifier's failure path, and that the embedded server
never imports Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cluster.tier import TierConfig, TierError, deployment_options, host_port, resolve
from server.errors import INFERENCE_UNAVAILABLE, InferenceUnavailable, client_message
from server.remote import RemoteClassifier, healthz_with_tier, to_wire
from tests.helpers import FakeClassifier

ROOT = Path(__file__).resolve().parents[2]


def test_resolve_cpu_cluster_one_cpu_replica() -> None:
    cfg = resolve(TierConfig(), {"CPU": 2.0})
    assert (cfg.replicas, cfg.gpus_per_replica) == (1, 0.0)
    assert Path(cfg.model_dir).is_absolute()


def test_resolve_gpu_cluster_one_replica_per_gpu() -> None:
    cfg = resolve(TierConfig(), {"CPU": 32.0, "GPU": 4.0})
    assert (cfg.replicas, cfg.gpus_per_replica) == (4, 1.0)
    half = resolve(TierConfig(gpus_per_replica=0.5), {"CPU": 32.0, "GPU": 1.0})
    assert half.replicas == 2


def test_resolve_refuses_what_the_cluster_cannot_hold() -> None:
    with pytest.raises(TierError, match="GPUs"):
        resolve(TierConfig(gpus_per_replica=1.0), {"CPU": 8.0})
    with pytest.raises(TierError, match="CPUs"):
        resolve(TierConfig(replicas=3, cpus_per_replica=1.0), {"CPU": 2.0})


def test_deployment_options_fixed_or_autoscaling() -> None:
    fixed = deployment_options(resolve(TierConfig(replicas=2, max_batch=4), {"CPU": 4.0}))
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0}
    assert fixed["max_ongoing_requests"] == 8
    auto = deployment_options(resolve(TierConfig(replicas=1, max_replicas=4),
                                      {"CPU": 8.0, "GPU": 4.0}))
    assert auto["autoscaling_config"]["min_replicas"] == 1
    assert auto["autoscaling_config"]["max_replicas"] == 4
    assert auto["ray_actor_options"]["num_gpus"] == 1.0 and "num_replicas" not in auto


def test_tier_config_refuses_bad_values() -> None:
    for bad in ({"replicas": -1}, {"cpus_per_replica": 0}, {"max_batch": 0},
                {"gpus_per_replica": -1}, {"health_check_s": 0}):
        with pytest.raises(ValueError):
            TierConfig(**bad)


def test_host_port() -> None:
    assert host_port("auto") is None
    assert host_port("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert host_port("ray://head:10001") == ("head", 10001)
    with pytest.raises(ValueError):
        host_port("head:port")


def test_wire_is_uint8_when_lossless() -> None:
    x = np.arange(2 * 48 * 48, dtype=np.float32).reshape(2, 48, 48, 1) % 256
    w = to_wire(x)
    assert w.dtype == np.uint8 and np.array_equal(w.astype(np.float32), x)
    y = x + 0.5
    assert to_wire(y).dtype == np.float32


class _Response:
    def __init__(self, value=None, error: Exception | None = None) -> None:
        self.value, self.error, self.cancelled = value, error, False

    def result(self, timeout_s=None):
        if self.error is not None:
            raise self.error
        return self.value

    def cancel(self) -> None:
        self.cancelled = True


class _Handle:
    """Answers like the deployment, or fails like a dead replica."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.responses: list[_Response] = []

    def remote(self, x: np.ndarray) -> _Response:
        r = (_Response(error=RuntimeError("ActorDiedError: the actor died")) if self.fail
             else _Response(np.full((len(x), 7), 1 / 7, np.float32)))
        self.responses.append(r)
        return r


def test_remote_classifier_answers_and_fails_clearly() -> None:
    errors: list[int] = []
    h = _Handle()
    clf = RemoteClassifier(h, "m", "ray:CPU", 1.0, on_error=lambda: errors.append(1))
    x = np.zeros((3, 48, 48, 1), np.float32)
    assert clf.predict_batch(x).shape == (3, 7)
    assert clf.predict_batch(x[:0]).shape == (0, 7)
    h.fail = True
    with pytest.raises(InferenceUnavailable) as info:
        clf.predict_batch(x)
    assert client_message(info.value) == INFERENCE_UNAVAILABLE
    assert "died" not in client_message(info.value)
    assert errors == [1] and h.responses[-1].cancelled
    assert clf.inflight == 0 and clf.calls == 2
    h.fail = False
    assert clf.predict_batch(x).shape == (3, 7)  # answers again


def test_healthz_unchanged_without_the_tier() -> None:
    from server.config import ServerConfig

    async def handler(request):  # pragma: no cover - never called
        raise AssertionError

    assert healthz_with_tier(handler, ServerConfig(), [FakeClassifier()]) is handler


def test_embedded_server_does_not_import_ray() -> None:
    code = ("import sys, run; run.build_parser(); import server.app, server.remote, "
            "cluster.tier; assert 'ray' not in sys.modules, 'ray imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_serve_against_an_unreachable_tier_is_one_line() -> None:
    out = subprocess.run([sys.executable, "run.py", "serve", "--ray", "127.0.0.1:1",
                          "--port", "0"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_bench_ray_measures_with_any_predictor() -> None:
    from bench.ray_bench import latency, measure, table

    fake = FakeClassifier()
    lat = latency(fake.predict_batch, 8, 5)
    assert set(lat) == {"median", "p90", "cpu"}
    rate, cpu_ms, n = measure([fake.predict_batch] * 2, 4, 0.05)
    assert n > 0 and n % 4 == 0 and rate > 0 and cpu_ms >= 0
    text = table(["a", "bb"], [["1", "2"], ["333", "4"]])
    assert text.splitlines()[0].split() == ["a", "bb"] and "333" in text
