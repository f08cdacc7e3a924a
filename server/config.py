"""Server configuration: one frozen dataclass, built once in run.py (or a test) and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from core.tracker import DEFAULT_REUSE_S
from server.adapt import DEFAULT_REUSE_MAX_S


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server depends on. No component reads the environment by itself."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: Model folder (``model.keras`` + ``metadata.json``), as written by ``run.py train``.
    model_dir: str = "models/default"
    #: Classifier backend: ``auto`` or a name from ``core.runtimes.BACKENDS``.
    backend: str = "auto"
    #: Sessions at once (WebRTC peers + WebSocket streams); beyond it ``/offer`` answers 503.
    max_sessions: int = 16
    #: Sessions at once from one client address.
    max_sessions_per_ip: int = 4
    #: Batcher: most faces classified in one model call.
    max_batch_size: int = 8
    #: Batcher: longest a face waits for others to join its batch, in milliseconds.
    max_wait_ms: float = 0.0
    #: Reuse a tracked face's probabilities this long (seconds) before classifying it again;
    #: new faces are always classified at once (0: every face in every frame).
    reuse_s: float = DEFAULT_REUSE_S
    #: Under load (sessions' frames being dropped) the reuse age grows up to this (seconds);
    #: at or below ``reuse_s`` it stays fixed. See ``server.adapt``.
    reuse_max_s: float = DEFAULT_REUSE_MAX_S
    #: Under sustained overload (the reuse age at its cap, frames still dropped) live frames
    #: use the ``fast`` detector until the load falls (``server.adapt``); False: never.
    shed_detect: bool = True
    #: Batcher: most faces waiting for the classifier; beyond it a frame or upload is refused
    #: (a per-frame error, or 503) instead of queued without bound.
    max_queued_faces: int = 256
    #: ``POST /api/predict`` photos being classified at once; beyond it the answer is 503 (the
    #: upload is read first: a slow upload does not hold a place).
    max_predict_concurrency: int = 4
    #: Seconds a ``POST /api/predict`` body may take to arrive (408 beyond) ...
    predict_read_timeout_s: float = 60.0
    #: ... and bodies arriving at once (503 beyond): at most this x ``max_body_bytes`` of
    #: uploads in memory.
    max_predict_reading: int = 16
    #: Largest uploaded video for ``POST /api/jobs`` (bytes; kept in memory, never on disk).
    max_upload_bytes: int = 100 * 1024 * 1024
    #: Video analysis jobs queued or running at once; beyond it ``POST /api/jobs`` is 503.
    max_jobs: int = 2
    #: A finished job's results are deleted this many seconds after it ends (or on DELETE).
    job_ttl_s: float = 600.0
    #: Threads for frame decoding + face detection (0: one per core).
    detect_workers: int = 0
    #: Face detector mode (``core.faces.MODES``) of live frames: ``live`` (faces down to about
    #: 40 px in 640x480 in every frame and ~30 px within a scan cycle, ~2x ``fast``'s cost per
    #: frame), ``fast`` (big faces near the camera only) or
    #: ``accurate``.
    detect_live_mode: str = "live"
    #: Face detector mode of uploaded photos (``POST /api/predict``): ``accurate`` (faces down
    #: to about 24 px, tens of ms per photo), or ``live``/``fast``.
    detect_photo_mode: str = "accurate"
    #: CPU runtime threads of the classifier (LiteRT; 0: automatic, see :func:`infer_threads_for`).
    infer_threads: int = 0
    #: STUN/TURN URLs given to the server's peer connections and to the page.
    ice_servers: tuple[str, ...] = ()
    turn_username: str | None = None
    turn_credential: str | None = None
    #: Close a peer that has not connected after this many seconds.
    connect_timeout_s: float = 30.0
    #: Close a session whose video has been silent this long (seconds).
    idle_timeout_s: float = 20.0
    #: Data-channel heartbeat period (seconds).
    heartbeat_s: float = 5.0
    #: Largest HTTP request body (bytes): uploads and offers.
    max_body_bytes: int = 8 * 1024 * 1024
    #: Largest SDP accepted by ``/offer`` (characters).
    max_sdp_chars: int = 64 * 1024
    #: Largest decoded image (pixels) for uploads and streamed frames.
    max_pixels: int = 4096 * 4096
    #: Largest WebSocket message (bytes).
    max_ws_message_bytes: int = 2 * 1024 * 1024
    #: Most messages per second a client may send on a WebSocket or data channel.
    max_messages_per_s: float = 60.0
    #: Origins allowed on /offer and WebSocket upgrades besides the server's own host.
    allowed_origins: tuple[str, ...] = ()
    #: Optional access token required on every route but the page, /config and /healthz
    #: (``?token=`` or the ``X-Access-Token`` header); see ``server.access``.
    access_token: str | None = None
    #: Directory of the browser client.
    client_dir: str = field(
        default_factory=lambda: os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "client"))
    # Public demo (ngrok, see server/tunnel.py).
    #: Open a public HTTPS tunnel once the server is up. Client addresses are then taken from
    #: ngrok's ``X-Forwarded-For`` on loopback connections (all tunnelled requests come from
    #: the local agent), so per-address limits apply to the real visitors.
    ngrok: bool = False
    #: ngrok authtoken (else ngrok's own config file); the tunnel is not opened without one.
    ngrok_authtoken: str | None = None
    #: ``user:password`` that ngrok requires of every visitor (password 8-128 characters).
    basic_auth: str | None = None
    #: Allow ``ngrok`` without basic auth or access token.
    insecure_public: bool = False
    #: The ngrok agent binary (None: pyngrok's managed copy, downloaded on first use).
    ngrok_path: str | None = None
    # Ray Serve inference tier (server/remote.py, cluster/; README "Scaling out").
    #: Ray address of a shared inference tier (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``):
    #: faces are classified there (deployed if absent). None: in this process (the default).
    ray_address: str | None = None
    #: Serve application name of the tier.
    ray_app: str = "facedapps"
    #: Tier calls this edge keeps in flight at once (one batcher each).
    ray_inflight: int = 4
    #: A tier call not answered in this many seconds fails its frames.
    ray_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if self.detect_workers < 0 or self.infer_threads < 0:
            raise ValueError("detect_workers and infer_threads must be >= 0 (0: automatic)")
        if self.max_sessions < 1 or self.max_sessions_per_ip < 1:
            raise ValueError("session limits must be >= 1")
        if self.reuse_s < 0 or self.reuse_max_s < 0:
            raise ValueError("reuse_s and reuse_max_s must be >= 0")
        if self.max_upload_bytes < 1 or self.max_jobs < 1 or self.job_ttl_s <= 0:
            raise ValueError("max_upload_bytes, max_jobs and job_ttl_s must be positive")
        if self.max_queued_faces < 1 or self.max_predict_concurrency < 1 or (
                self.max_predict_reading < 1):
            raise ValueError("max_queued_faces, max_predict_concurrency and "
                             "max_predict_reading must be >= 1")
        if not (self.predict_read_timeout_s > 0 and self.idle_timeout_s > 0
                and self.connect_timeout_s > 0):
            raise ValueError("predict_read_timeout_s, idle_timeout_s and connect_timeout_s "
                             "must be > 0")
        from core.faces import MODES

        for name in (self.detect_live_mode, self.detect_photo_mode):
            if name not in MODES:
                raise ValueError(f"unknown detector mode {name!r}; one of {sorted(MODES)}")
        if self.ray_inflight < 1 or self.ray_timeout_s <= 0:
            raise ValueError("ray_inflight must be >= 1 and ray_timeout_s > 0")


def infer_threads_for(cfg: ServerConfig) -> int:
    """Runtime threads the server gives a CPU classifier: ``cfg.infer_threads``, else 1.

    The detection pool already has one worker per core. A multi-threaded classifier next to it
    oversubscribes the cores, and the runtime's threads then wait for each other inside every
    call. Measured on 2 cores, 16 clients (``run.py bench --threads-sweep``, two runs): 1
    classifier thread 171 and 180 results/s in all, 2 threads 58 and 165; with 1 thread the
    latency tail was also shorter. Batching across clients keeps one thread busy.
    """
    return cfg.infer_threads or 1


def detect_workers_for(cfg: ServerConfig) -> int:
    """Threads for frame conversion + face detection: ``cfg.detect_workers``, else one per core."""
    return cfg.detect_workers or max(1, os.cpu_count() or 1)
