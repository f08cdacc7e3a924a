"""Public demo URL through an ngrok tunnel (pyngrok): safety rules, open, close.

ngrok carries HTTP only, not the UDP that WebRTC media uses: through the tunnel the page needs
STUN/TURN servers (``--ice-server``) or falls back to streaming frames over ``/ws/stream``.

Same-origin checks keep working through the tunnel because the ngrok agent forwards the public
``Host`` header unchanged (no ``host_header`` rewrite is requested here): the browser's
``Origin: https://<sub>.ngrok-free.app`` matches ``Host: <sub>.ngrok-free.app``.

pyngrok talks to the ngrok agent binary, which it downloads on first use when ``ngrok_path``
does not exist. All calls here block (seconds); the server runs them in a daemon thread
(:class:`PublicTunnel`), so neither startup nor shutdown waits on the ngrok service.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Callable

from server.config import ServerConfig
from server.errors import ServeError

log = logging.getLogger(__name__)

AUTHTOKEN_HELP = ("ngrok needs an authtoken: --ngrok-authtoken or NGROK_AUTHTOKEN; "
                  "get one at https://dashboard.ngrok.com")
#: ngrok's own rule for basic-auth passwords (traffic policy ``basic-auth`` action).
MIN_PASSWORD, MAX_PASSWORD = 8, 128
#: Seconds pyngrok waits for the agent to start and reach the ngrok service.
STARTUP_TIMEOUT_S = 15
#: Seconds for each request to the local agent API.
REQUEST_TIMEOUT_S = 10.0
#: Parts of agent errors that mean the authtoken was refused.
_AUTH_ERRORS = ("ERR_NGROK_105", "ERR_NGROK_107", "ERR_NGROK_4018", "authtoken", "authentication")


class TunnelError(ServeError):
    """The public tunnel could not be opened (the local server can keep running)."""


def parse_basic_auth(value: str) -> tuple[str, str]:
    """``"user:pass"`` -> ``(user, pass)``; ServeError unless ngrok would accept it."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ServeError("--basic-auth must look like USER:PASSWORD")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ServeError(f"--basic-auth password must be {MIN_PASSWORD} to {MAX_PASSWORD} "
                         f"characters (ngrok's rule); it has {len(password)}")
    if ":" in password or any(c.isspace() for c in value):
        raise ServeError("--basic-auth may not contain whitespace or a second ':'")
    return user, password


def check_public_safety(cfg: ServerConfig) -> None:
    """Refuse to go public unprotected: ``--ngrok`` needs basic auth, an access token, or
    an explicit ``--insecure-public``. Also validates the basic-auth format."""
    if cfg.basic_auth is not None:
        parse_basic_auth(cfg.basic_auth)
    if not cfg.ngrok:
        return
    if cfg.basic_auth or cfg.access_token or cfg.insecure_public:
        return
    raise ServeError(
        "refusing to publish the camera demo on a public ngrok URL without protection; "
        "choose one: --basic-auth USER:PASSWORD (ngrok asks every visitor for it), "
        "--access-token TOKEN (the page asks for it; also FACEDAPPS_ACCESS_TOKEN), "
        "or --insecure-public to publish it open to anyone")


def basic_auth_policy(basic_auth: str) -> str:
    """The ngrok traffic policy (v3 endpoints) that requires HTTP basic auth.

    JSON is valid YAML; the agent API takes the policy as a YAML string.
    """
    parse_basic_auth(basic_auth)
    return json.dumps({"on_http_request": [{"actions": [
        {"type": "basic-auth", "config": {"realm": "FaceDApps", "credentials": [basic_auth]}}]}]})


def upstream_host(host: str) -> str:
    """Where the agent reaches this server: loopback when it listens on every interface."""
    if host in ("", "0.0.0.0", "::", "localhost"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _configured_authtoken(pyngrok_config: Any) -> str | None:
    """An authtoken saved in ngrok's own config file (``ngrok config add-authtoken``)."""
    from pyngrok import conf

    path = conf.get_config_path(pyngrok_config)
    try:
        import yaml

        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    agent = data.get("agent")
    token = agent.get("authtoken") if isinstance(agent, dict) else None
    return token or data.get("authtoken") or None


def make_pyngrok_config(ngrok_path: str | None = None, config_path: str | None = None,
                        startup_timeout: int = STARTUP_TIMEOUT_S) -> Any:
    """A pyngrok config for the v3 agent and v3 endpoints (``ngrok_path`` None: pyngrok's
    managed binary, or ``PYNGROK_NGROK_PATH``)."""
    from pyngrok import conf

    return conf.PyngrokConfig(ngrok_path=ngrok_path, config_path=config_path,
                              startup_timeout=startup_timeout, request_timeout=REQUEST_TIMEOUT_S,
                              ngrok_version="3", config_version="3", monitor_thread=True)


def _tunnel_error(exc: BaseException, ngrok_path: str) -> TunnelError:
    """A one-line, actionable message for what pyngrok raised."""
    from pyngrok.exception import (
        PyngrokNgrokError,
        PyngrokNgrokHTTPError,
        PyngrokNgrokInstallError,
        PyngrokNgrokURLError,
    )

    detail = " ".join(str(exc).split())
    if isinstance(exc, PyngrokNgrokInstallError):
        return TunnelError(f"the ngrok agent is not at {ngrok_path} and could not be downloaded "
                           f"({detail}); install ngrok and pass --ngrok-path, or check the "
                           f"internet connection")
    if isinstance(exc, PyngrokNgrokHTTPError):
        body = " ".join(str(exc.body or "").split())[:300]
        return TunnelError(f"the ngrok agent refused the tunnel (HTTP {exc.status_code}): "
                           f"{body or detail}")
    if isinstance(exc, PyngrokNgrokURLError):
        return TunnelError(f"the ngrok agent's local API did not answer: {detail}")
    if isinstance(exc, PyngrokNgrokError):
        err = exc.ngrok_error or detail
        if any(k.lower() in err.lower() for k in _AUTH_ERRORS):
            return TunnelError(f"ngrok refused the authtoken: {' '.join(err.split())}. "
                               f"{AUTHTOKEN_HELP}")
        if "not found" in detail and not os.path.exists(ngrok_path):
            return TunnelError(f"the ngrok agent is not at {ngrok_path}; install ngrok and pass "
                               f"--ngrok-path")
        return TunnelError(f"cannot reach the ngrok service: {' '.join(err.split())}")
    if isinstance(exc, OSError):
        return TunnelError(f"cannot start the ngrok agent at {ngrok_path}: {detail}")
    return TunnelError(f"ngrok failed: {type(exc).__name__}: {detail}")


def open_tunnel(port: int, authtoken: str | None, basic_auth: str | None, *,
                host: str = "127.0.0.1", pyngrok_config: Any = None) -> str:
    """Open an HTTPS tunnel to ``host:port`` and return its public URL (blocks for seconds).

    ``authtoken`` goes into the pyngrok config (the agent gets it as ``--authtoken``);
    ``basic_auth`` (``user:pass``) becomes a ``basic-auth`` traffic-policy action, so ngrok
    asks every visitor for it before anything reaches this server. TunnelError on failure.
    """
    from pyngrok import conf, ngrok
    from pyngrok.exception import PyngrokError

    policy = basic_auth_policy(basic_auth) if basic_auth else None
    pcfg = pyngrok_config if pyngrok_config is not None else conf.get_default()
    token = authtoken or pcfg.auth_token or _configured_authtoken(pcfg)
    if not token:
        raise TunnelError(AUTHTOKEN_HELP)
    pcfg.auth_token = token
    # An explicit name: a "pyngrok-default" definition in the user's ngrok.yml is not merged
    # in, and the agent API path stays clean (pyngrok's default name embeds the address).
    options: dict[str, Any] = {"name": f"facedapps-{port}"}
    if policy is not None:
        options["traffic_policy"] = policy
    try:
        tunnel = ngrok.connect(f"http://{upstream_host(host)}:{port}", "http",
                               pyngrok_config=pcfg, **options)
    except (PyngrokError, OSError) as exc:
        log.debug("ngrok connect failed", exc_info=True)
        close_tunnel(None, pcfg)  # an agent that started but could not open the tunnel
        raise _tunnel_error(exc, pcfg.ngrok_path) from exc
    url = tunnel.public_url
    if not url or not url.startswith("https://"):
        close_tunnel(url, pcfg)
        raise TunnelError(f"ngrok answered with an unexpected public URL: {url!r}")
    return url


def close_tunnel(public_url: str | None, pyngrok_config: Any = None) -> None:
    """Disconnect the tunnel and stop the agent; never raises."""
    from pyngrok import conf, ngrok

    pcfg = pyngrok_config if pyngrok_config is not None else conf.get_default()
    if public_url:
        try:
            ngrok.disconnect(public_url, pyngrok_config=pcfg)
        except Exception as exc:  # the agent may already be gone
            log.debug("ngrok disconnect failed: %s", exc)
    try:
        ngrok.kill(pyngrok_config=pcfg)
    except Exception as exc:
        log.debug("ngrok kill failed: %s", exc)


class PublicTunnel:
    """Opens the tunnel in a daemon thread once the local site is up; closes it on shutdown.

    ``on_open(url)`` or ``on_error(TunnelError)`` is called from that thread.
    """

    def __init__(self, cfg: ServerConfig, on_open: Callable[[str], None],
                 on_error: Callable[[TunnelError], None], pyngrok_config: Any = None) -> None:
        self.cfg = cfg
        self.on_open = on_open
        self.on_error = on_error
        self.pyngrok_config = pyngrok_config
        self.public_url: str | None = None
        self.error: TunnelError | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ngrok-tunnel", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        if self.pyngrok_config is None:
            self.pyngrok_config = make_pyngrok_config(self.cfg.ngrok_path)
        try:
            url = open_tunnel(self.cfg.port, self.cfg.ngrok_authtoken, self.cfg.basic_auth,
                              host=self.cfg.host, pyngrok_config=self.pyngrok_config)
        except TunnelError as exc:
            self.error = exc
            self.on_error(exc)
            return
        except Exception as exc:  # top of a thread: report, never crash the server
            log.exception("ngrok tunnel failed")
            self.error = TunnelError(f"ngrok failed: {exc}")
            self.on_error(self.error)
            return
        with self._lock:
            if self._closed:  # shutdown came first
                close_tunnel(url, self.pyngrok_config)
                return
            self.public_url = url
        self.on_open(url)

    def wait(self, timeout: float) -> bool:
        """Wait for the opening attempt to end; True when it did."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Close the tunnel and stop the agent, waiting at most ``timeout`` seconds."""
        with self._lock:
            self._closed = True
            url, self.public_url = self.public_url, None
        if self._thread is None or self.pyngrok_config is None:
            return
        closer = threading.Thread(target=close_tunnel, args=(url, self.pyngrok_config),
                                  name="ngrok-close", daemon=True)
        closer.start()
        closer.join(timeout)
