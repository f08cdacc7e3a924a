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
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from dataclasses import dataclass, replace
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


def connect(address: str, timeout_s: float = 5.0) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``)
    as a driver. Returns False when this process is already connected (the connection is
    reused, whatever its address), True when this call connected. An address where nothing
    listens fails within ``timeout_s``."""
    ray, _ = import_ray()
    if ray.is_initialized():
        return False
    try:
        check_reachable(address, timeout_s)
    except ValueError as exc:
        raise TierError(str(exc)) from exc
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as exc:  # ConnectionError, gRPC errors, ValueError: all mean unreachable
        hint = ""
        if address.startswith("ray://") and "RAY_AUTH_MODE" not in os.environ:
            hint = ("; a cluster with token authentication needs RAY_AUTH_MODE=token and its "
                    "token (~/.ray/auth_token or RAY_AUTH_TOKEN) here too")
        raise TierError(f"cannot reach the Ray cluster at {address!r} ({_one_line(exc)}{hint})"
                        ) from exc
    return True


def disconnect() -> None:
    """Leave the Ray cluster (the tier keeps running)."""
    ray, _ = import_ray()
    ray.shutdown()


def resolve(cfg: TierConfig, resources: dict[str, float]) -> TierConfig:
    """``cfg`` with its automatic choices made for a cluster of ``resources`` (as from
    ``ray.cluster_resources()``): GPUs per replica (1 where there are GPUs, else 0) and the
    replica count (one per GPU, else 1). TierError if the cluster cannot hold the (minimum)
    replicas now."""
    gpus, cpus = float(resources.get("GPU", 0.0)), float(resources.get("CPU", 0.0))
    gpr = cfg.gpus_per_replica if cfg.gpus_per_replica is not None else (1.0 if gpus else 0.0)
    n = cfg.replicas or (max(1, math.floor(gpus / gpr)) if gpr else 1)
    if gpr * n > gpus:
        raise TierError(f"{n} replicas x {gpr:g} GPUs need {gpr * n:g} GPUs; the cluster has "
                        f"{gpus:g}")
    if cfg.cpus_per_replica * n > cpus:
        raise TierError(f"{n} replicas x {cfg.cpus_per_replica:g} CPUs need "
                        f"{cfg.cpus_per_replica * n:g} CPUs; the cluster has {cpus:g}")
    return replace(cfg, gpus_per_replica=gpr, replicas=n,
                   model_dir=os.path.abspath(cfg.model_dir))


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


def _bounded(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """``fn()`` in a daemon thread, waited for at most ``timeout_s`` (Serve's own waits are
    unbounded, e.g. for replicas that no node can place)."""
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
    if not done.wait(timeout_s):
        raise TierError(f"{what} did not finish in {timeout_s:g} s "
                        f"(see `python run.py cluster status`)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def app_status(app_name: str = APP_NAME) -> str | None:
    """The application's Serve status (``RUNNING``, ``DEPLOYING``, ...), None if absent."""
    _, serve = import_ray()
    app = serve.status().applications.get(app_name)
    return None if app is None else str(getattr(app.status, "value", app.status))


def deploy(cfg: TierConfig) -> TierConfig:
    """Deploy the tier, or update it in place (Serve replaces replicas gradually); waits
    until it runs. Returns the resolved settings. The process must be connected."""
    ray, serve = import_ray()
    try:
        read_meta(cfg.model_dir)
    except ModelError as exc:
        raise TierError(str(exc)) from exc
    cfg = resolve(cfg, ray.cluster_resources())
    from cluster.deployment import build  # imports ray.serve at module level

    app = build(DEPLOYMENT_NAME, deployment_options(cfg), cfg.model_dir, cfg.backend,
                cfg.threads, cfg.max_batch, cfg.max_wait_ms)
    serve.start(proxy_location="Disabled")  # handles only: no HTTP proxy actors
    log.info("deploying %s: %d replicas (max %d), %g GPUs / %g CPUs each, model %s",
             cfg.app_name, cfg.replicas, max(cfg.replicas, cfg.max_replicas),
             cfg.gpus_per_replica, cfg.cpus_per_replica, cfg.model_dir)
    try:
        _bounded(lambda: serve.run(app, name=cfg.app_name, route_prefix=None),
                 cfg.deploy_timeout_s, f"deploying {cfg.app_name!r}")
    except TierError:
        raise
    except Exception as exc:  # Serve's deployment failure (e.g. the model fails to load)
        raise TierError(f"deploying {cfg.app_name!r} failed ({_one_line(exc)})") from exc
    return cfg


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
    return True
