"""The Ray Serve inference tier on a local Ray (loopback only): the deployment answers like the
embedded classifier, edge servers stream WebRTC sessions through it, a killed replica costs
per-frame errors but no session, and two edges share one deployment. Faults of the control
plane: an unchanged redeploy keeps the replica, a deploy that needs CPUs other work holds is
refused before it touches the tier, the driver tells its own cluster from a restarted one, and a
failed update puts the previous deployment back.

Run alone with ``pytest -m ray``. One local Ray (2 CPUs, no dashboard, a small object store)
and one deployment serve the whole module; both are shut down at its end.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import replace
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
TIER = tier.TierConfig(model_dir=MODEL, backend=BACKEND, replicas=1, health_check_s=1.0,
                       deploy_timeout_s=120)


@pytest.fixture(scope="module")
def ray_tier():
    """A local Ray with the tier deployed (one CPU replica); torn down after the module."""
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=200 * 1024 * 1024,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        tier.deploy(TIER)
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


async def test_an_unchanged_deploy_leaves_the_replica_alone(ray_tier) -> None:
    before = await replica_stats(ray_tier)
    done = await asyncio.to_thread(tier.deploy_tier, TIER)
    assert done.unchanged and done.config.replicas == 1
    after = await replica_stats(ray_tier)
    assert after["pid"] == before["pid"]  # not restarted


async def test_deploy_refuses_cpus_held_by_other_work(ray_tier) -> None:
    import ray

    @ray.remote(num_cpus=1)
    class CpuHolder:
        def ping(self) -> int:
            return 1

    holder = CpuHolder.remote()  # the cluster's second CPU (the replica holds the first)
    try:
        await asyncio.to_thread(ray.get, holder.ping.remote(), timeout=60)
        before = await replica_stats(ray_tier)
        start = time.monotonic()
        with pytest.raises(tier.TierError, match=r"need 2 CPUs; the cluster has 2, but only 1 "
                                                 r"free now .*CpuHolder x1"):
            await asyncio.to_thread(tier.deploy_tier, replace(TIER, replicas=2))
        assert time.monotonic() - start < 30  # refused, not waited for
        assert (await asyncio.to_thread(tier.status))["status"] == "RUNNING"
        assert (await replica_stats(ray_tier))["pid"] == before["pid"]  # untouched
    finally:
        ray.kill(holder)


async def test_the_driver_tells_its_cluster_from_a_restarted_one(ray_tier) -> None:
    ident = await asyncio.to_thread(tier.driver_identity)
    assert ident is not None and ident.cluster_id and ident.node_id
    assert await asyncio.to_thread(tier.cluster_change, ident) is None
    restarted = replace(ident, cluster_id="ab" * 28)
    assert await asyncio.to_thread(tier.cluster_change, restarted) == "the cluster restarted"
    gone = await asyncio.to_thread(tier.cluster_change, replace(ident, node_id="ab" * 28))
    assert gone is not None and "left it" in gone


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


async def test_a_failed_update_restores_the_previous_deployment(ray_tier, monkeypatch) -> None:
    """A fault only a replica meets (here: local checks skipped, an unknown backend): the
    error names the cause and the previous deployment runs again. (Last: it restarts the
    replica.)"""
    monkeypatch.setattr(tier, "check_model", lambda cfg, gpu=None: None)
    with pytest.raises(tier.TierError) as info:
        await asyncio.to_thread(tier.deploy_tier, replace(TIER, backend="bogus"))
    message = str(info.value)
    assert "unknown backend 'bogus'" in message, message
    assert message.endswith("the previous deployment was restored"), message
    st = await asyncio.to_thread(tier.status)
    assert st["status"] == "RUNNING" and st["replicas"] == 1
    x = face_batch()
    y = await asyncio.to_thread(lambda: ray_tier.remote(x).result(timeout_s=60))
    assert y.shape == (len(x), 7)
    assert (await replica_stats(ray_tier))["runtime"] == BACKEND
    monkeypatch.undo()
    assert (await asyncio.to_thread(tier.deploy_tier, TIER)).unchanged
