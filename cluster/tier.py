"""The inference tier's settings and control plane: connect to a Ray cluster, deploy (or find)
the Serve application, report its status, hand out a handle, delete it.

The tier is one Serve application (:data:`APP_NAME`) with one deployment
(:data:`DEPLOYMENT_NAME`, ``cluster.deployment``): each replica loads the model folder with
``core.runtimes.load_classifier`` (the same backend choice as the embedded server: Keras on a
GPU, LiteRT int8 on a CPU) and classifies batches formed by ``@serve.batch`` from the requests
of every edge server. Replicas take one GPU each where the cluster has GPUs, else
``cpus_per_replica`` CPUs. No HTTP proxy is started: edges call the deployment through a
``DeploymentHandle``.

Ray is imported inside the functions, so the embedded server never needs it; a missing Ray is
a :class:`TierError` with the install hint. Every failure here is a :class:`TierError` whose
message is one line for the command line.

Faults handled here: an address that is not a Ray GCS fails within seconds (:func:`check_gcs`,
a direct gRPC call, before ``ray.init`` retries for minutes); a deploy checks the model folder,
the backend and the cluster's *free* resources before it touches the running application, keeps
an unchanged one as it is (the deployed settings are recorded in Ray's internal KV), stops
waiting when Serve reports replicas it cannot place, and puts the previous deployment back when
an update fails; :func:`cluster_change` tells an edge whose Ray driver outlived its cluster (the
head restarted, or this machine's Ray node left it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import warnings
import zipfile
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, TypeVar

from core.errors import ModelError
from core.model_dir import read_meta

log = logging.getLogger(__name__)

#: The Serve application and deployment names of the tier.
APP_NAME = "facedapps"
DEPLOYMENT_NAME = "FaceClassifier"
INSTALL_HINT = "Ray Serve is not installed: pip install -e '.[cluster]'"
#: Application states in which an existing tier is used as it is (not redeployed).
USABLE_STATES = ("RUNNING", "DEPLOYING")
#: Longest wait for a direct answer from a cluster's GCS (address check, restart check).
GCS_TIMEOUT_S = 5.0
#: Ray internal-KV namespace where each application's deployed settings are recorded.
KV_NAMESPACE = "facedapps"

T = TypeVar("T")


class TierError(RuntimeError):
    """The inference tier cannot be reached, deployed or described (a one-line message)."""


@dataclass(frozen=True)
class TierConfig:
    """How the tier is deployed (``run.py cluster deploy`` flags; ``serve --ray`` uses its own
    model, backend and batcher settings when it has to deploy)."""

    #: Model folder; it must exist at the same path on every machine that runs a replica.
    model_dir: str = "models/default"
    #: Backend of each replica (``auto``: Keras on a GPU replica, else the fastest CPU runtime).
    backend: str = "auto"
    #: Replicas (0: one per GPU in the cluster, else 1). With ``max_replicas`` above it, the
    #: minimum of Serve's autoscaling.
    replicas: int = 0
    #: Autoscaling ceiling (0: no autoscaling, a fixed ``replicas``).
    max_replicas: int = 0
    #: GPUs per replica (None: 1 where the cluster has GPUs, else 0).
    gpus_per_replica: float | None = None
    #: CPUs reserved per replica; a CPU replica's runtime uses this many threads.
    cpus_per_replica: float = 1.0
    #: ``@serve.batch``: most requests (each one edge batch of faces) per model call.
    max_batch: int = 8
    #: ``@serve.batch``: longest the first request of a batch waits for others (ms).
    max_wait_ms: float = 0.0
    #: Serve's health check period of each replica (s): a dead replica is noticed and
    #: replaced within about this time (Serve's default is 10 s).
    health_check_s: float = 2.0
    #: Serve application name.
    app_name: str = APP_NAME
    #: Longest a deployment may take to become ready (model loading included).
    deploy_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.replicas < 0 or self.max_replicas < 0:
            raise ValueError("replicas and max_replicas must be >= 0")
        if self.gpus_per_replica is not None and self.gpus_per_replica < 0:
            raise ValueError("gpus_per_replica must be >= 0")
        if self.cpus_per_replica <= 0:
            raise ValueError("cpus_per_replica must be > 0")
        if self.health_check_s <= 0:
            raise ValueError("health_check_s must be > 0")
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        if self.max_replicas and self.replicas > self.max_replicas:
            raise ValueError("max_replicas must be 0 (no autoscaling) or >= replicas")
        if self.deploy_timeout_s <= 0:
            raise ValueError("deploy_timeout_s must be > 0")

    @property
    def threads(self) -> int:
        """Runtime threads of a CPU replica: its reserved CPUs."""
        return max(1, int(self.cpus_per_replica))


def import_ray() -> tuple[Any, Any]:
    """``(ray, ray.serve)``; TierError with the install hint when Ray is not installed."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise TierError(INSTALL_HINT) from exc
    return ray, serve


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` or ``ray://HOST:PORT`` address; None for ``auto``
    (or anything else Ray resolves itself). ValueError for a malformed port."""
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        return None
    if not port.isdigit():
        raise ValueError(f"bad Ray address {address!r}: expected HOST:PORT, ray://HOST:PORT "
                         f"or auto")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """TierError unless something accepts TCP connections at ``address``'s host and port
    (Ray's own connection attempts to a dead address retry for minutes)."""
    hp = host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout_s).close()
    except OSError as exc:
        raise TierError(f"cannot reach the Ray cluster at {address!r} ({exc.strerror or exc})") \
            from exc


def _gcs_call(address: str, call: Callable[[Any, Any], T]) -> T:
    """``call(stub, messages)`` on a fresh gRPC channel to the GCS at ``HOST:PORT``: ``stub`` is
    Ray's ``NodeInfoGcsService`` stub, ``messages`` its request module. The channel carries this
    process's Ray token where Ray uses one. ``grpc.RpcError`` propagates; ImportError when this
    Ray has no such stubs (the checks that use this are then skipped)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    try:
        from ray._private.grpc_utils import init_grpc_channel

        channel = init_grpc_channel(address)
    except Exception:  # an older Ray: a plain channel (no token)
        channel = grpc.insecure_channel(address)
    try:
        return call(gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel), gcs_service_pb2)
    finally:
        channel.close()


def gcs_cluster_id(address: str, timeout_s: float = GCS_TIMEOUT_S) -> str:
    """The cluster id (hex) the GCS at ``HOST:PORT`` answers with; ``grpc.RpcError`` when it
    does not answer as a Ray GCS within ``timeout_s``."""
    reply = _gcs_call(address, lambda stub, pb: stub.GetClusterId(pb.GetClusterIdRequest(),
                                                                 timeout=timeout_s))
    return bytes(reply.cluster_id).hex()


def gcs_node_alive(address: str, node_id: str, timeout_s: float = GCS_TIMEOUT_S) -> bool:
    """Whether the GCS at ``HOST:PORT`` lists the node ``node_id`` (hex) as alive (a node that
    died, or one it never knew, is not); ``grpc.RpcError`` when it does not answer."""
    from ray.core.generated import gcs_pb2

    alive: Any = gcs_pb2.GcsNodeInfo.ALIVE  # type: ignore[attr-defined]  # generated code

    def call(stub: Any, pb: Any) -> Any:
        req = pb.GetAllNodeInfoRequest()
        req.node_selectors.add(node_id=bytes.fromhex(node_id))
        return stub.GetAllNodeInfo(req, timeout=timeout_s)

    reply = _gcs_call(address, call)
    return any(bytes(n.node_id).hex() == node_id and n.state == alive
               for n in reply.node_info_list)


def check_gcs(address: str, timeout_s: float = GCS_TIMEOUT_S) -> None:
    """TierError unless the ``HOST:PORT`` address answers as a Ray cluster's GCS within
    ``timeout_s``: ``ray.init`` retries anything else for minutes (an HTTP server, another
    gRPC service, a wrong port), and also a GCS that refuses this process's token (Ray's token
    authentication: an explicit address needs ``RAY_AUTH_MODE=token`` and the head's token).
    Ray Client (``ray://``) and ``auto`` addresses are not checked here (Ray Client gives up by
    itself within about 30 s)."""
    hp = host_port(address)
    if hp is None or address.startswith("ray://"):
        return
    import grpc

    try:
        gcs_cluster_id(f"{hp[0]}:{hp[1]}", timeout_s)
    except (ImportError, AttributeError, TypeError):  # another Ray's internals: not checked
        return
    except grpc.RpcError as exc:
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        if code == grpc.StatusCode.UNAUTHENTICATED:
            fix = ("copy the head's ~/.ray/auth_token here (or set RAY_AUTH_TOKEN)"
                   if os.environ.get("RAY_AUTH_MODE") == "token" else
                   "set RAY_AUTH_MODE=token and copy the head's ~/.ray/auth_token here (or set "
                   "RAY_AUTH_TOKEN)")
            raise TierError(f"the Ray cluster at {address!r} uses token authentication and "
                            f"refused this process (no token, or another cluster's): {fix}"
                            ) from exc
        text = str((exc.details() if callable(getattr(exc, "details", None)) else None)
                   or exc).strip()
        text = (text.rsplit("last error: ", 1)[-1].splitlines() or [""])[0][:160]
        name = str(getattr(code, "name", code))
        why = text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
        raise TierError(f"cannot reach the Ray cluster at {address!r}: it does not answer as a "
                        f"Ray GCS ({why}); check the address and port (the head's "
                        f"`ray start --port`, 6379 by default)") from exc


def connect(address: str, timeout_s: float = GCS_TIMEOUT_S) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``)
    as a driver. Returns False when this process is already connected (the connection is
    reused, whatever its address), True when this call connected. An address where nothing
    listens, or where something other than a Ray GCS answers, fails within ``timeout_s`` (a
    ``ray://`` address that does not answer within Ray Client's own 30 s)."""
    ray, _ = import_ray()
    if ray.is_initialized():
        return False
    try:
        check_reachable(address, timeout_s)
    except ValueError as exc:
        raise TierError(str(exc)) from exc
    check_gcs(address, timeout_s)
    try:
        with warnings.catch_warnings():  # Ray Client's timeout also warns: one line is enough
            warnings.simplefilter("ignore")
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as exc:  # ConnectionError, gRPC errors, ValueError: all mean unreachable
        hint = ""
        if address.startswith("ray://") and "RAY_AUTH_MODE" not in os.environ:
            hint = ("; a cluster with token authentication needs RAY_AUTH_MODE=token and its "
                    "token (~/.ray/auth_token or RAY_AUTH_TOKEN) here too")
        raise TierError(f"cannot reach the Ray cluster at {address!r} ({_one_line(exc)}{hint})"
                        ) from exc
    return True


@dataclass(frozen=True)
class DriverIdentity:
    """Which cluster this process's Ray driver joined, and as which node (see
    :func:`cluster_change`)."""

    #: The GCS address (``HOST:PORT``) the driver talks to.
    gcs_address: str
    #: The cluster id (hex) the driver joined; a restarted head has a new one.
    cluster_id: str
    #: The Ray node (hex id) the driver runs on: this machine's raylet.
    node_id: str


def driver_identity() -> DriverIdentity | None:
    """This process's :class:`DriverIdentity`; None when it is not connected, or connected
    through Ray Client (``ray://``: no GCS address or node of its own here)."""
    ray, _ = import_ray()
    if not ray.is_initialized():
        return None
    try:
        from ray.util.client import ray as client

        if client.is_connected():
            return None
        ctx = ray.get_runtime_context()
        gcs = str(getattr(ctx, "gcs_address", "") or "")
        node_id = str(ctx.get_node_id() or "")
        cid = getattr(ray._private.worker.global_worker.node, "cluster_id", None)
    except Exception:  # another Ray's internals: no identity, no restart check
        return None
    if not gcs or not node_id:
        return None
    cluster_id = cid.hex() if cid is not None and hasattr(cid, "hex") else ""
    if not cluster_id:
        try:
            cluster_id = gcs_cluster_id(gcs)
        except Exception:  # no answer now: the node check still applies
            cluster_id = ""
    return DriverIdentity(gcs, cluster_id, node_id)


def still_driver(ident: DriverIdentity) -> bool:
    """Whether this process is still the Ray driver ``ident`` describes (not disconnected or
    reconnected elsewhere since); reads local state only."""
    ray, _ = import_ray()
    if not ray.is_initialized():
        return False
    try:
        return str(ray.get_runtime_context().get_node_id()) == ident.node_id
    except Exception:  # torn down meanwhile
        return False


def cluster_change(ident: DriverIdentity, timeout_s: float = GCS_TIMEOUT_S) -> str | None:
    """Why the driver ``ident`` no longer belongs to the cluster at its GCS address, asking the
    GCS directly (the driver's own Ray calls hang when it is stale): ``"the cluster
    restarted"`` when the GCS answers with another cluster id (a new ``ray start --head``; a
    head with GCS fault tolerance keeps its id), or ``"this machine's Ray node ... left it"``
    when the GCS no longer lists the driver's node as alive. None while the driver belongs to
    it, and while the GCS does not answer (Ray ends a driver whose GCS stays away longer than
    its reconnect timeout, 60 s)."""
    try:
        cid = gcs_cluster_id(ident.gcs_address, timeout_s)
        if ident.cluster_id and cid and cid != ident.cluster_id:
            return "the cluster restarted"
        if not gcs_node_alive(ident.gcs_address, ident.node_id, timeout_s):
            return f"this machine's Ray node {ident.node_id[:12]} left it"
    except Exception:  # no answer (head down or restarting), or an older Ray: unknown
        return None
    return None


def disconnect() -> None:
    """Leave the Ray cluster (the tier keeps running)."""
    ray, _ = import_ray()
    ray.shutdown()


def resolve(cfg: TierConfig, resources: dict[str, float],
            free: dict[str, float] | None = None, busy: str = "") -> TierConfig:
    """``cfg`` with its automatic choices made for a cluster of ``resources`` (as from
    ``ray.cluster_resources()``): GPUs per replica (1 where there are GPUs, else 0) and the
    replica count (one per GPU, else 1). TierError if the cluster cannot hold the (minimum)
    replicas, or, given ``free`` (what the replicas could take now: the cluster's available
    resources plus what the application's current replicas hold, which an update releases),
    cannot hold them now; ``busy`` then says what else holds resources."""
    gpus, cpus = float(resources.get("GPU", 0.0)), float(resources.get("CPU", 0.0))
    gpr = cfg.gpus_per_replica if cfg.gpus_per_replica is not None else (1.0 if gpus else 0.0)
    n = cfg.replicas or (max(1, math.floor(gpus / gpr)) if gpr else 1)
    if cfg.max_replicas and n > cfg.max_replicas:
        raise TierError(f"{n} replicas (one per GPU) exceed --max-replicas {cfg.max_replicas}; "
                        f"pass --replicas")
    for name, each, total in (("GPUs", gpr, gpus), ("CPUs", cfg.cpus_per_replica, cpus)):
        need = each * n
        if need > total + 1e-6:
            raise TierError(f"{n} replicas x {each:g} {name} need {need:g} {name}; the cluster "
                            f"has {total:g}")
        avail = float((free or {}).get(name[:-1], 0.0))
        if free is not None and need > avail + 1e-6:
            raise TierError(f"{n} replicas x {each:g} {name} need {need:g} {name}; the cluster "
                            f"has {total:g}, but only {avail:g} free now{busy}")
    return replace(cfg, gpus_per_replica=gpr, replicas=n,
                   model_dir=os.path.abspath(cfg.model_dir))


def check_model(cfg: TierConfig, gpu: bool | None = None) -> str | None:
    """Check here, before anything is deployed, what each replica will load: the model
    folder's metadata, the backend's name, and the backend's model file (a LiteRT file is
    loaded; a Keras file must be a readable archive). With ``auto``, the backend a replica
    picks depends on whether it has a GPU: ``gpu`` (None: not known yet, only the folder and
    the name are checked). Returns the backend the replicas will run (None when not known).
    TierError (the model error's one line) otherwise; needs no Ray."""
    from core.litert import make_interpreter
    from core.model_dir import keras_path, litert_path
    from core.runtimes import choose_backend

    try:
        meta = read_meta(cfg.model_dir)
        if cfg.backend == "auto" and gpu is None:
            return None
        name = choose_backend(cfg.model_dir, cfg.backend, gpu=bool(gpu))
        if name.startswith("litert-"):
            path = litert_path(cfg.model_dir, name.split("-", 1)[1], meta)
            try:
                make_interpreter(path, 1)
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{path}: cannot load LiteRT model ({exc})") from exc
        else:
            path = keras_path(cfg.model_dir)
            if not zipfile.is_zipfile(path):
                raise ModelError(f"{path}: cannot read the model file: it is corrupt or not a "
                                 f"Keras .keras file")
    except ModelError as exc:
        raise TierError(str(exc)) from exc
    return name


def model_fingerprint(model_dir: str) -> str:
    """A digest of the model folder's metadata and the files it lists (a retrained or
    converted model in the same folder changes it)."""
    h = hashlib.sha256()
    try:
        meta = read_meta(model_dir, validate=False)
        paths = [meta.folder / "metadata.json"]
        paths += sorted(meta.folder / str(v) for v in meta.files.values() if isinstance(v, str))
        for path in paths:
            if path.is_file():
                h.update(path.name.encode() + b"\0")
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
    except (ModelError, OSError):
        return ""
    return h.hexdigest()


def deployment_record(cfg: TierConfig) -> dict[str, Any]:
    """What a deploy of the resolved ``cfg`` puts in the replicas: compared with the recorded
    one to leave an unchanged application alone."""
    conf = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "deploy_timeout_s"}
    return {"config": conf, "model": model_fingerprint(cfg.model_dir)}


def _kv_key(app_name: str) -> bytes:
    return f"tier/{app_name}".encode()


def recorded(app_name: str = APP_NAME) -> dict[str, Any] | None:
    """The :func:`deployment_record` of the application's last successful deploy from this
    code (kept in the cluster's internal KV), or None."""
    try:
        from ray.experimental import internal_kv

        raw = internal_kv._internal_kv_get(_kv_key(app_name), namespace=KV_NAMESPACE)
        rec = json.loads(raw) if raw else None
    except Exception:  # no KV (Ray Client on an old Ray, ...) or unreadable: not known
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("config"), dict) else None


def _record(app_name: str, rec: dict[str, Any] | None) -> None:
    try:
        from ray.experimental import internal_kv

        if rec is None:
            internal_kv._internal_kv_del(_kv_key(app_name), namespace=KV_NAMESPACE)
        else:
            internal_kv._internal_kv_put(_kv_key(app_name), json.dumps(rec, sort_keys=True),
                                         overwrite=True, namespace=KV_NAMESPACE)
    except Exception as exc:  # only the "unchanged" shortcut depends on it
        log.warning("could not record the deployed settings of %s (%s)", app_name,
                    _one_line(exc))


def _config_of(rec: dict[str, Any]) -> TierConfig:
    names = {f.name for f in fields(TierConfig)}
    return TierConfig(**{k: v for k, v in rec["config"].items() if k in names})


def _replica_prefix(app_name: str) -> str:
    return f"SERVE_REPLICA::{app_name}#{DEPLOYMENT_NAME}#"


def _alive_actors() -> list[tuple[str, str]]:
    """``(class name, actor name)`` of the cluster's alive actors (from the GCS's actor table;
    empty where that is not readable)."""
    ray, _ = import_ray()
    try:
        table = ray._private.state.actors()
    except Exception:
        return []
    return [(str(a.get("ActorClassName", "?")), str(a.get("Name") or ""))
            for a in table.values() if a.get("State") == "ALIVE"]


def _free_for(cfg: TierConfig, resources: dict[str, float],
              prev: dict[str, Any] | None, mine: int) -> tuple[dict[str, float], str]:
    """What the new replicas of ``cfg.app_name`` could take now (the available resources plus
    those its ``mine`` current replicas hold, as Serve counts them: an update replaces them),
    and a note on what else is alive in the cluster (named where cheap: other actors; the
    actor table is not readable through Ray Client)."""
    ray, _ = import_ray()
    free = {k: float(v) for k, v in ray.available_resources().items()}
    actors = _alive_actors()
    each = _config_of(prev) if prev else cfg
    gpr = each.gpus_per_replica
    if gpr is None:
        gpr = 1.0 if resources.get("GPU") else 0.0
    free["CPU"] = free.get("CPU", 0.0) + mine * each.cpus_per_replica
    free["GPU"] = free.get("GPU", 0.0) + mine * gpr
    others: dict[str, int] = {}
    for cls, name in actors:
        if name.startswith(_replica_prefix(cfg.app_name)) or cls.endswith("ServeController"):
            continue
        others[cls] = others.get(cls, 0) + 1
    listed = ", ".join(f"{c} x{k}" for c, k in sorted(others.items())[:5])
    busy = (f" (held by other actors or tasks; alive actors: {listed})" if listed
            else " (held by other tasks)")
    return free, busy


def deployment_options(cfg: TierConfig) -> dict[str, Any]:
    """The ``serve.deployment`` options of a resolved ``cfg``: fixed replicas or autoscaling
    between ``replicas`` and ``max_replicas``, the actor resources, and room for one batch
    running and one forming per replica."""
    opts: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": cfg.cpus_per_replica,
                              "num_gpus": cfg.gpus_per_replica or 0},
        "max_ongoing_requests": 2 * cfg.max_batch,
        "health_check_period_s": cfg.health_check_s,
    }
    if cfg.max_replicas > cfg.replicas:
        opts["autoscaling_config"] = {"min_replicas": cfg.replicas,
                                      "max_replicas": cfg.max_replicas,
                                      "target_ongoing_requests": max(2, cfg.max_batch // 2)}
    else:
        opts["num_replicas"] = cfg.replicas
    return opts


def _bounded(fn: Callable[[], T], timeout_s: float, what: str,
             poll: Callable[[], None] | None = None, poll_s: float = 1.0) -> T:
    """``fn()`` in a daemon thread, waited for at most ``timeout_s`` (Serve's own waits are
    unbounded, e.g. for replicas that no node can place); ``poll()`` runs every ``poll_s``
    meanwhile and may end the wait by raising."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="tier-wait", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not done.wait(max(0.0, min(poll_s, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            raise TierError(f"{what} did not finish in {timeout_s:g} s "
                            f"(see `python run.py cluster status`)")
        if poll is not None:
            poll()
    if "error" in box:
        raise box["error"]
    return box["value"]


def app_status(app_name: str = APP_NAME) -> str | None:
    """The application's Serve status (``RUNNING``, ``DEPLOYING``, ...), None if absent."""
    _, serve = import_ray()
    app = serve.status().applications.get(app_name)
    return None if app is None else str(getattr(app.status, "value", app.status))


def _app_state(app_name: str) -> tuple[str | None, int, str]:
    """``(status or None, running replicas, message)`` of the application."""
    _, serve = import_ray()
    app = serve.status().applications.get(app_name)
    if app is None:
        return None, 0, ""
    dep = app.deployments.get(DEPLOYMENT_NAME)
    states = {str(getattr(k, "value", k)): int(v)
              for k, v in (dep.replica_states if dep else {}).items()}
    message = "\n".join(m for m in (app.message, dep.message if dep else "") if m)
    return str(getattr(app.status, "value", app.status)), states.get("RUNNING", 0), message


def failure_cause(text: str) -> str:
    """The line that names the cause in Serve's (multi-line) failure message or traceback:
    the last ``SomethingError: ...`` line, else the first line."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0].split(".")[-1]
        if ":" in ln and head.isidentifier() and (head.endswith("Error")
                                                  or head.endswith("Exception")):
            return ln[:300]
    return lines[0][:300] if lines else ""


def _unschedulable(app_name: str) -> None:
    """TierError when Serve reports replicas of the application that it cannot place (Serve
    says so after 30 s; no node has the resources free)."""
    _, serve = import_ray()
    app = serve.status().applications.get(app_name)
    dep = app.deployments.get(DEPLOYMENT_NAME) if app is not None else None
    msg = str(getattr(dep, "message", "") or "")
    if "to be scheduled" in msg:
        first = msg.split(". ")[0].strip().rstrip(".")
        raise TierError(f"deploying {app_name!r} stopped: {first}; the cluster has no room "
                        f"for them now (`ray status` shows what holds its resources)")


def _run(cfg: TierConfig) -> None:
    """``serve.run`` the resolved ``cfg``, bounded: TierError (one line) when it fails, when
    Serve cannot place its replicas, or after ``cfg.deploy_timeout_s``."""
    _, serve = import_ray()
    from cluster.deployment import build  # imports ray.serve at module level

    app = build(DEPLOYMENT_NAME, deployment_options(cfg), cfg.model_dir, cfg.backend,
                cfg.threads, cfg.max_batch, cfg.max_wait_ms)
    serve.start(proxy_location="Disabled")  # handles only: no HTTP proxy actors
    log.info("deploying %s: %d replicas (max %d), %g GPUs / %g CPUs each, model %s",
             cfg.app_name, cfg.replicas, max(cfg.replicas, cfg.max_replicas),
             cfg.gpus_per_replica, cfg.cpus_per_replica, cfg.model_dir)
    try:
        _bounded(lambda: serve.run(app, name=cfg.app_name, route_prefix=None),
                 cfg.deploy_timeout_s, f"deploying {cfg.app_name!r}",
                 poll=lambda: _unschedulable(cfg.app_name), poll_s=2.0)
    except TierError:
        raise
    except Exception as exc:  # Serve's deployment failure (e.g. the model fails to load)
        try:
            detail = _app_state(cfg.app_name)[2]
        except Exception:  # the controller is gone too: the exception's own text
            detail = ""
        cause = failure_cause(detail) or failure_cause(str(exc))
        raise TierError(f"deploying {cfg.app_name!r} failed ({cause or _one_line(exc)})"
                        ) from exc


@dataclass(frozen=True)
class Deployed:
    """What :func:`deploy_tier` did."""

    #: The resolved settings now deployed.
    config: TierConfig
    #: True when the running application already had these settings and was left alone.
    unchanged: bool


def deploy_tier(cfg: TierConfig, force: bool = False) -> Deployed:
    """Deploy the tier, or update it in place; waits until it runs. The process must be
    connected. Before touching the running application it checks the model and backend
    (:func:`check_model`) and that the cluster has the replicas' resources free now; a running
    application deployed with the same settings and model files is left as it is (unless
    ``force``: Serve would restart its replicas). When an update fails, the previous
    deployment is put back, and the error says so."""
    ray, _ = import_ray()
    check_model(cfg)
    resources = ray.cluster_resources()
    state, running, _ = _app_state(cfg.app_name)
    prev = recorded(cfg.app_name) if state is not None else None
    free, busy = _free_for(cfg, resources, prev, running)
    cfg = resolve(cfg, resources, free, busy)
    check_model(cfg, gpu=bool(cfg.gpus_per_replica))
    rec = deployment_record(cfg)
    if (not force and state == "RUNNING" and prev == rec and rec["model"]
            and running >= cfg.replicas):
        log.info("%s runs with these settings already: left as it is", cfg.app_name)
        return Deployed(cfg, True)
    try:
        _run(cfg)
    except TierError as exc:
        raise TierError(f"{exc}; {_after_failure(cfg, state, prev)}") from exc
    _record(cfg.app_name, rec)
    return Deployed(cfg, False)


def _after_failure(cfg: TierConfig, state: str | None, prev: dict[str, Any] | None) -> str:
    """Undo a failed deploy as far as possible; says what was done: the previous deployment
    put back (when it was running and its settings are recorded), or the new application
    deleted (when there was none)."""
    _, serve = import_ray()
    if state is None:
        try:
            _bounded(lambda: serve.delete(cfg.app_name), 60.0, f"deleting {cfg.app_name!r}")
        except Exception as exc:
            return f"deleting the failed application failed too ({_one_line(exc)})"
        _record(cfg.app_name, None)
        return "nothing was deployed"
    if state != "RUNNING":
        return f"the application was {state} before; see `python run.py cluster status`"
    if prev is None:
        return ("its previous settings were not recorded (deployed by an older version), so "
                "they could not be put back; see `python run.py cluster status`")
    old = replace(_config_of(prev), deploy_timeout_s=cfg.deploy_timeout_s)
    try:
        fingerprint = model_fingerprint(old.model_dir)
        same_files = bool(fingerprint) and fingerprint == prev.get("model")
    except Exception:
        same_files = False
    if not same_files:  # restoring would load the new files again
        return (f"the model files in {old.model_dir} changed since the previous deployment, so "
                "it could not be put back; see `python run.py cluster status`")
    try:
        _run(old)
    except Exception as exc:
        return f"restoring the previous deployment failed too ({_one_line(exc)})"
    return "the previous deployment was restored"


def deploy(cfg: TierConfig, force: bool = False) -> TierConfig:
    """:func:`deploy_tier`'s resolved settings."""
    return deploy_tier(cfg, force).config


def ensure(cfg: TierConfig) -> bool:
    """Use the tier if it runs (or is starting), else deploy it with ``cfg``. Returns True
    when this call deployed it."""
    state = app_status(cfg.app_name)
    if state in USABLE_STATES:
        log.info("using the running inference tier %r (%s)", cfg.app_name, state)
        return False
    deploy(cfg)
    return True


def handle(app_name: str = APP_NAME) -> Any:
    """The ``DeploymentHandle`` of the tier's deployment."""
    _, serve = import_ray()
    try:
        return serve.get_app_handle(app_name)
    except Exception as exc:  # RayServeException: no controller or no such application
        raise TierError(f"no inference tier {app_name!r} ({_one_line(exc)})") from exc


def describe(h: Any, timeout_s: float = 5.0) -> list[dict]:
    """What each replica reports of itself (model, runtime, device, node): from every
    replica where the handle can broadcast (Ray >= 2.5x), else from one."""
    if hasattr(h, "broadcast"):
        return list(h.broadcast("describe").results(timeout_s=timeout_s))
    return [h.describe.remote().result(timeout_s=timeout_s)]


def status(app_name: str = APP_NAME) -> dict[str, Any]:
    """The tier as Serve and Ray see it: application state, replica states, the cluster's
    alive nodes and resources."""
    ray, serve = import_ray()
    out: dict[str, Any] = {"app": app_name, "status": "NOT_DEPLOYED", "replicas": 0}
    app = serve.status().applications.get(app_name)
    if app is not None:
        dep = app.deployments.get(DEPLOYMENT_NAME)
        states = {str(getattr(k, "value", k)): int(v)
                  for k, v in (dep.replica_states if dep else {}).items()}
        out.update(status=str(getattr(app.status, "value", app.status)), message=app.message,
                   replica_states=states, replicas=states.get("RUNNING", 0))
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    out["cluster"] = {"nodes": len(nodes), "CPU": res.get("CPU", 0.0),
                      "GPU": res.get("GPU", 0.0)}
    return out


def delete(app_name: str = APP_NAME) -> bool:
    """Delete the tier's application (the Ray cluster keeps running). False if absent."""
    _, serve = import_ray()
    if app_status(app_name) is None:
        return False
    serve.delete(app_name)
    _record(app_name, None)
    return True
