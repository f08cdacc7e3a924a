"""The inference tier's fault handling, without a Ray cluster: addresses that are not a Ray GCS
fail fast (a plain HTTP server), a restarted cluster is told from a GCS that answers with another
cluster id or without the driver's node (a fake GCS speaking Ray's gRPC protocol), the edge's
watch acts on a confirmed change only, deploys check the model, the backend and the free
resources before touching the cluster, and an edge that lost its cluster exits with one line
and its own exit status."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cluster import tier
from cluster.tier import DriverIdentity, TierConfig, TierError
from core.model_dir import LITERT_FILES
from server.remote import LOST_EXIT_CODE, ClusterWatch

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "default"
NODE = "ab" * 28  # a node id (hex, 28 bytes as Ray's)
CLUSTER = "cd" * 28


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # pragma: no cover - nothing to log
        pass


@pytest.fixture
def http_port():
    """A plain HTTP server on loopback (what a wrong port may well be)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_gcs():
    """A gRPC server answering Ray's ``NodeInfoGcsService`` like a GCS: ``state`` holds the
    cluster id it answers with and the nodes it lists as alive (others as dead)."""
    grpc = pytest.importorskip("grpc")
    pytest.importorskip("ray")
    from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc

    state = {"cluster_id": CLUSTER, "alive": {NODE}, "dead": set(), "token": False}

    class Servicer(gcs_service_pb2_grpc.NodeInfoGcsServiceServicer):
        def GetClusterId(self, request, context):
            if state["token"]:  # token authentication, and no token was sent
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken: missing")
            return gcs_service_pb2.GetClusterIdReply(
                cluster_id=bytes.fromhex(state["cluster_id"]))

        def GetAllNodeInfo(self, request, context):
            wanted = {bytes(s.node_id).hex() for s in request.node_selectors if s.node_id}
            reply = gcs_service_pb2.GetAllNodeInfoReply()
            for node, st in ([(n, gcs_pb2.GcsNodeInfo.ALIVE) for n in state["alive"]]
                             + [(n, gcs_pb2.GcsNodeInfo.DEAD) for n in state["dead"]]):
                if not wanted or node in wanted:
                    reply.node_info_list.add(node_id=bytes.fromhex(node), state=st)
            return reply

    server = grpc.server(futures.ThreadPoolExecutor(2))
    gcs_service_pb2_grpc.add_NodeInfoGcsServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    state["address"] = f"127.0.0.1:{port}"
    yield state
    server.stop(None)


# -- addresses -----------------------------------------------------------------------------

def test_an_http_server_is_not_a_ray_cluster(http_port) -> None:
    pytest.importorskip("grpc")
    pytest.importorskip("ray")
    start = time.monotonic()
    with pytest.raises(TierError, match="does not answer as a Ray GCS") as info:
        tier.check_gcs(f"127.0.0.1:{http_port}", timeout_s=5.0)
    assert time.monotonic() - start < 10
    assert "\n" not in str(info.value)


def test_a_gcs_passes_the_address_check(fake_gcs) -> None:
    tier.check_gcs(fake_gcs["address"], timeout_s=5.0)
    assert tier.gcs_cluster_id(fake_gcs["address"]) == CLUSTER
    assert tier.gcs_node_alive(fake_gcs["address"], NODE)
    assert not tier.gcs_node_alive(fake_gcs["address"], "ef" * 28)


def test_a_gcs_that_wants_a_token_says_so(fake_gcs, monkeypatch) -> None:
    fake_gcs["token"] = True
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(TierError, match="token authentication .* set RAY_AUTH_MODE=token"):
        tier.check_gcs(fake_gcs["address"], timeout_s=5.0)


def test_cluster_status_against_an_http_server_is_one_line(http_port) -> None:
    pytest.importorskip("ray")
    start = time.monotonic()
    out = subprocess.run([sys.executable, "run.py", "cluster", "status", "--ray",
                          f"127.0.0.1:{http_port}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert time.monotonic() - start < 30
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines == [lines[-1]] and lines[-1].startswith("error: "), out.stderr[-2000:]
    assert "does not answer as a Ray GCS" in lines[-1]


# -- a cluster that restarted under the edge --------------------------------------------------

def test_cluster_change_tells_a_restart_from_a_healthy_cluster(fake_gcs) -> None:
    ident = DriverIdentity(fake_gcs["address"], CLUSTER, NODE)
    assert tier.cluster_change(ident) is None
    fake_gcs["cluster_id"] = "ef" * 28  # `ray stop`, `ray start --head`: a new cluster
    assert tier.cluster_change(ident) == "the cluster restarted"
    fake_gcs["cluster_id"] = CLUSTER  # same cluster, but this machine's node died
    fake_gcs["alive"], fake_gcs["dead"] = set(), {NODE}
    reason = tier.cluster_change(ident)
    assert reason is not None and "left it" in reason and NODE[:12] in reason
    fake_gcs["dead"] = set()  # a node the GCS never heard of (a GCS without fault tolerance)
    assert tier.cluster_change(ident) is not None


def test_cluster_change_is_unknown_while_the_gcs_is_away(fake_gcs) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    assert tier.cluster_change(DriverIdentity(dead, CLUSTER, NODE), timeout_s=2.0) is None


def test_watch_acts_on_a_confirmed_change_only() -> None:
    answers = iter(["the cluster restarted", None, "the cluster restarted",
                    "the cluster restarted"])
    seen: list[str | None] = []
    lost: list[str] = []
    done = threading.Event()

    def change(ident, timeout_s):
        reason = next(answers, "the cluster restarted")
        seen.append(reason)
        return reason

    def on_lost(message: str) -> None:
        lost.append(message)
        done.set()

    watch = ClusterWatch(DriverIdentity("h:1", CLUSTER, NODE), "10.0.0.5:6379", on_lost,
                         period_s=0.01, confirm=2, change=change, connected=lambda i: True)
    watch.start()
    assert done.wait(10), "the watch never reported the lost cluster"
    # one strike, then an answer, then two strikes in a row: reported after the fourth check
    assert seen[:4] == ["the cluster restarted", None, "the cluster restarted",
                        "the cluster restarted"] and len(seen) == 4
    assert lost == [watch.lost]
    assert lost[0] == ("lost the Ray cluster at '10.0.0.5:6379': the cluster restarted; "
                       "restart this server to join it")


def test_watch_ends_when_the_process_left_the_cluster_itself() -> None:
    calls: list[int] = []
    watch = ClusterWatch(DriverIdentity("h:1", CLUSTER, NODE), "auto", lambda m: calls.append(1),
                         period_s=0.01, change=lambda i, t: "the cluster restarted",
                         connected=lambda i: False)
    watch.start()
    watch._thread.join(10)
    assert not watch._thread.is_alive() and calls == [] and watch.lost is None


def test_an_edge_that_lost_its_cluster_exits_with_one_line() -> None:
    """``run.py serve --ray``: the real shutdown path (SIGTERM to itself, aiohttp's graceful
    exit, run.py's exit status), with a fake tier so that no Ray is needed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"""
import socket, sys, threading, time
import run, server.app, server.remote
from tests.helpers import FakeClassifier
server.app.load_remote_replicas = lambda cfg, metrics: [FakeClassifier()]

def lose():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    server.remote.exit_lost("lost the Ray cluster at 'auto': the cluster restarted; "
                            "restart this server to join it")

threading.Thread(target=lose, daemon=True).start()
sys.exit(run.main(["serve", "--ray", "auto", "--port", "{port}"]))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == LOST_EXIT_CODE, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: lost the Ray cluster at 'auto': the cluster restarted; restart "
                      "this server to join it"], out.stderr[-3000:]
    assert "Traceback" not in out.stderr


def test_an_edge_that_loses_its_cluster_while_starting_exits_3_at_once() -> None:
    """Before the server listens (deploying the tier can take minutes) Ray's own SIGTERM
    handler would end the process with 15: a lost edge exits with its own status at once."""
    code = ("import signal, sys, time, server.remote\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(15))  # as Ray's handler\n"
            "server.remote.exit_lost('lost the Ray cluster at x: the cluster restarted')\n"
            "time.sleep(30)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == LOST_EXIT_CODE
    assert out.stderr.strip() == "error: lost the Ray cluster at x: the cluster restarted"


# -- deploy checks before the cluster is touched -----------------------------------------------

def test_check_model_names_the_cause() -> None:
    with pytest.raises(TierError, match="unknown backend 'bogus'"):
        tier.check_model(TierConfig(model_dir=str(MODEL), backend="bogus"))
    with pytest.raises(TierError, match="no model at"):
        tier.check_model(TierConfig(model_dir=str(ROOT / "no-such-model")))
    assert tier.check_model(TierConfig(model_dir=str(MODEL))) is None  # auto: not known yet
    assert tier.check_model(TierConfig(model_dir=str(MODEL)), gpu=False) == "litert-int8"
    assert tier.check_model(TierConfig(model_dir=str(MODEL), backend="keras")) == "keras"


def test_check_model_loads_the_files_a_replica_would(tmp_path: Path) -> None:
    meta = json.loads((MODEL / "metadata.json").read_text())
    shutil.copy(MODEL / "metadata.json", tmp_path / "metadata.json")
    (tmp_path / meta["files"][LITERT_FILES["int8"]]).write_bytes(b"not a flatbuffer")
    (tmp_path / meta["files"]["keras"]).write_bytes(b"not a zip")
    with pytest.raises(TierError, match="cannot load LiteRT model"):
        tier.check_model(TierConfig(model_dir=str(tmp_path), backend="litert-int8"))
    with pytest.raises(TierError, match="corrupt"):
        tier.check_model(TierConfig(model_dir=str(tmp_path), backend="keras"))
    with pytest.raises(TierError, match="no LiteRT fp32 model"):
        tier.check_model(TierConfig(model_dir=str(tmp_path), backend="litert-fp32"))


def test_cluster_deploy_with_a_bad_backend_fails_before_connecting() -> None:
    out = subprocess.run([sys.executable, "run.py", "cluster", "deploy", "--backend", "bogus",
                          "--ray", "127.0.0.1:1"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown backend 'bogus'"), lines
    assert "cannot reach" not in out.stderr  # refused before any connection


def test_resolve_counts_free_resources_not_totals() -> None:
    cfg = TierConfig(model_dir=str(MODEL), replicas=2)
    assert resolve_ok(cfg, {"CPU": 2.0}, {"CPU": 2.0})
    with pytest.raises(TierError, match=r"the cluster has 2, but only 1 free now \(held by X\)"):
        tier.resolve(cfg, {"CPU": 2.0}, {"CPU": 1.0}, " (held by X)")
    with pytest.raises(TierError, match="GPUs; the cluster has 2, but only 1 free now"):
        tier.resolve(TierConfig(), {"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 1.0})
    with pytest.raises(TierError, match="exceed --max-replicas 2"):
        tier.resolve(TierConfig(max_replicas=2), {"CPU": 8.0, "GPU": 4.0})
    with pytest.raises(ValueError, match="max_replicas"):
        TierConfig(replicas=3, max_replicas=2)


def resolve_ok(cfg: TierConfig, total: dict, free: dict) -> bool:
    return tier.resolve(cfg, total, free).replicas == cfg.replicas


def test_deployment_record_changes_with_settings_and_model_files(tmp_path: Path) -> None:
    for name in ("metadata.json", "model_int8.tflite"):
        shutil.copy(MODEL / name, tmp_path / name)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta["files"] = {k: v for k, v in meta["files"].items() if (tmp_path / str(v)).exists()}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    cfg = tier.resolve(TierConfig(model_dir=str(tmp_path)), {"CPU": 2.0})
    rec = tier.deployment_record(cfg)
    assert rec["model"] and json.loads(json.dumps(rec)) == rec  # survives the KV round trip
    assert tier.deployment_record(cfg) == rec
    assert tier.deployment_record(replace(cfg, max_batch=4)) != rec
    assert tier.deployment_record(replace(cfg, deploy_timeout_s=5.0)) == rec
    with open(tmp_path / "model_int8.tflite", "ab") as f:  # a re-converted model, same name
        f.write(b"\0")
    assert tier.deployment_record(cfg)["model"] != rec["model"]


def test_failure_cause_is_the_error_line_of_a_traceback() -> None:
    text = ("Deploying app 'facedapps' failed with exception:\nTraceback (most recent call "
            "last):\n  File \"x.py\", line 1, in <module>\n    raise ModelError(...)\n"
            "core.errors.ModelError: unknown backend 'bogus'; choose from auto\n")
    assert tier.failure_cause(text) == "core.errors.ModelError: unknown backend 'bogus'; " \
                                       "choose from auto"
    assert tier.failure_cause("replica failed to start") == "replica failed to start"
    assert tier.failure_cause("") == ""
