"""The Ray Serve inference tier on a local Ray (loopback only): the deployment answers like the
embedded classifier, edge servers stream WebRTC sessions through it, a killed replica costs
per-frame errors but no session, and two edges share one deployment.

Run alone with ``pytest -m ray``. One local Ray (2 CPUs, no dashboard, a small object store)
and one deployment serve the whole module; both are shut down at its end.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install -e '.[cluster]')")

from bench.rtc_client import FaceTrack, RtcClient  # noqa: E402
from cluster import tier  # noqa: E402
from core.preprocess import preprocess_face, to_batch  # noqa: E402
from core.runtimes import load_classifier  # noqa: E402
from server.app import create_app  # noqa: E402
from server.config import ServerConfig  # noqa: E402
from server.errors import INFERENCE_UNAVAILABLE  # noqa: E402
from server.remote import RemoteClassifier  # noqa: E402
from server.state import CLASSIFIER, REGISTRY  # noqa: E402
from tests.helpers import face_images, wait_for  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

MODEL = str(Path(__file__).resolve().parents[2] / "models" / "default")
BACKEND = "litert-int8"  # the shipped model's CPU runtime


@pytest.fixture(scope="module")
def ray_tier():
    """A local Ray with the tier deployed (one CPU replica); torn down after the module."""
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=200 * 1024 * 1024,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        tier.deploy(tier.TierConfig(model_dir=MODEL, backend=BACKEND, replicas=1,
                                    health_check_s=1.0, deploy_timeout_s=120))
        yield tier.handle()
    finally:
        serve.shutdown()
        ray.shutdown()


def edge_config(**kw) -> ServerConfig:
    return ServerConfig(model_dir=MODEL, backend=BACKEND, ray_address="auto", **kw)


async def start_edge(aiohttp_server, **kw):
    app = create_app(edge_config(**kw))
    server = await aiohttp_server(app, host="127.0.0.1")
    return app, str(server.make_url("")).rstrip("/")


def face_batch() -> np.ndarray:
    """The fixture faces through the crop rule's preprocessing, as the classifier sees them."""
    return to_batch([preprocess_face(f) for f in face_images()])


async def replica_stats(handle) -> dict:
    return await asyncio.to_thread(lambda: handle.describe.remote().result(timeout_s=30))


def kill_replica() -> None:
    """Kill the tier's (one) replica actor, as a crash would; Serve starts another."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if re.match(rf"SERVE_REPLICA::{tier.APP_NAME}#{tier.DEPLOYMENT_NAME}#", a["name"])]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)


async def test_tier_gives_the_embedded_probabilities(ray_tier) -> None:
    x = face_batch()
    embedded = load_classifier(MODEL, BACKEND, threads=1).predict_batch(x)
    direct = await asyncio.to_thread(lambda: ray_tier.remote(x).result(timeout_s=30))
    remote = RemoteClassifier(ray_tier, "default", "ray:CPU", 30.0)
    via_edge = await asyncio.to_thread(remote.predict_batch, x)  # uint8 on the wire
    assert direct.shape == (len(x), 7)
    np.testing.assert_allclose(direct, embedded, atol=1e-6)
    np.testing.assert_allclose(via_edge, embedded, atol=1e-6)
    info = await replica_stats(ray_tier)
    assert info["runtime"] == BACKEND and info["gpu_ids"] == []


async def test_edge_streams_and_survives_a_replica_death(ray_tier, aiohttp_server) -> None:
    # A short call timeout: Serve holds calls for a dead replica until its replacement is up
    # (seconds: a new worker process loads the model); the edge fails those frames sooner.
    app, url = await start_edge(aiohttp_server, ray_timeout_s=0.5)
    assert isinstance(app[CLASSIFIER], RemoteClassifier)
    async with aiohttp.ClientSession() as http:
        health = await (await http.get(url + "/healthz")).json()
        assert health["backend"] == "ray-serve" and health["replicas"] == 1
        assert health["device"] == "ray:CPU" and health["tier"]["status"] == "RUNNING"
        c = RtcClient(url)
        await c.connect(http)
        await wait_for(lambda: len(c.results) >= 3, 60, what="results through the tier")
        face = c.results[-1]["faces"][0]  # (the box is the detector's business, not tested here)
        assert abs(sum(face["scores"].values()) - 1.0) < 0.01

        killed_after = c.results[-1]["frame"]
        await asyncio.to_thread(kill_replica)
        await wait_for(lambda: [m for m in c.errors if m["frame"] > killed_after], 60,
                       what="per-frame errors after the replica died")
        err = c.errors[-1]
        assert err["error"] == INFERENCE_UNAVAILABLE and err["session"] == c.session
        # Serve replaces the replica; results resume in the same session.
        await wait_for(lambda: any(m["frame"] > max(e["frame"] for e in c.errors)
                                   for m in c.results), 90,
                       what="results after the replica was replaced")
        assert c.session in app[REGISTRY].sessions
        metrics = await (await http.get(url + "/metrics")).text()
        count = re.search(r"^facedapps_inference_errors_total (\S+)$", metrics, re.M)
        assert count and float(count.group(1)) >= 1
        # /healthz catches up too (its tier probe is cached for 2 s, and under load Serve's
        # controller may report the new replica a little after it first answers).
        deadline = time.monotonic() + 30
        while True:
            health = await (await http.get(url + "/healthz")).json()
            if health["replicas"] == 1 and health["tier"]["status"] == "RUNNING":
                break
            assert time.monotonic() < deadline, f"/healthz after the replacement: {health}"
            await asyncio.sleep(0.5)
        await c.close()
        await wait_for(lambda: not app[REGISTRY].sessions, 10, what="session removal")


async def test_two_edges_share_one_deployment(ray_tier, aiohttp_server) -> None:
    before = await replica_stats(ray_tier)
    app_a, url_a = await start_edge(aiohttp_server)
    app_b, url_b = await start_edge(aiohttp_server)
    async with aiohttp.ClientSession() as http:
        a = RtcClient(url_a, FaceTrack(0, x=40, y=40))
        b = RtcClient(url_b, FaceTrack(1, x=400, y=260))
        await a.connect(http)
        await b.connect(http)
        await wait_for(lambda: len(a.results) >= 3 and len(b.results) >= 3, 60,
                       what="results on both edges")
        for c in (a, b):
            assert {m["session"] for m in c.results} == {c.session}
            assert len(c.results[-1]["faces"]) == 1
        health = [await (await http.get(u + "/healthz")).json() for u in (url_a, url_b)]
        assert health[0]["tier"]["nodes"] == health[1]["tier"]["nodes"]
        await a.close()
        await b.close()
        await wait_for(lambda: not app_a[REGISTRY].sessions and not app_b[REGISTRY].sessions,
                       10, what="session removal")
    after = await replica_stats(ray_tier)
    assert after["pid"] == before["pid"]  # the one replica served both edges
    calls = [app[CLASSIFIER].calls for app in (app_a, app_b)]
    assert min(calls) >= 1  # both edges classified on the tier ...
    assert after["requests"] - before["requests"] >= sum(calls)  # ... on its one replica
