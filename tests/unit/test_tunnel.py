"""The ngrok tunnel: argument checks, the safety rule, auth wiring, failure paths, and serve().

Nothing here reaches the ngrok service or downloads the agent: pyngrok's downloader is
replaced by a stub that fails (and records the attempt), and the agent is either missing, a
non-executable file, or a small fake agent script that speaks the real agent's log lines and
local HTTP API (``/api/endpoints``), driven through pyngrok's real code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from urllib.error import URLError

import pytest
from pyngrok import installer, ngrok, process

from server import tunnel
from server.config import ServerConfig
from server.errors import ServeError
from server.tunnel import (
    AUTHTOKEN_HELP,
    PublicTunnel,
    TunnelError,
    check_public_safety,
    make_pyngrok_config,
    open_tunnel,
    parse_basic_auth,
)
from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(120)

TOKEN = "2abcDEFfakeTokenForTests_xyz"


@pytest.fixture(autouse=True)
def no_download(monkeypatch) -> list[str]:
    """Any attempt to download the ngrok agent fails at once (and is recorded)."""
    attempts: list[str] = []

    def refuse(url, *a, **kw):
        attempts.append(url)
        raise URLError("downloads are disabled in tests")

    monkeypatch.setattr(installer, "_download_file", refuse)
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    yield attempts
    for path in list(process._current_processes):  # never leave an agent behind
        process.kill_process(path)
    ngrok._current_tunnels.clear()


def pyngrok_config(tmp_path: Path, ngrok_path: Path, timeout: int = 15):
    return make_pyngrok_config(str(ngrok_path), str(tmp_path / "ngrok.yml"), timeout)


# --------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("value,ok", [
    ("user:password123", True),
    ("a:" + "x" * 8, True),
    ("a:" + "x" * 128, True),
    ("user:short", False),  # 5 characters: ngrok's minimum is 8
    ("a:" + "x" * 129, False),
    ("userpassword123", False),
    (":password123", False),
    ("user:", False),
    ("user:pass:word123", False),
    ("us er:password123", False),
])
def test_basic_auth_format(value, ok):
    if ok:
        assert parse_basic_auth(value)[0] == value.split(":")[0]
    else:
        with pytest.raises(ServeError):
            parse_basic_auth(value)


def test_public_without_protection_is_refused():
    with pytest.raises(ServeError) as e:
        check_public_safety(ServerConfig(ngrok=True))
    msg = str(e.value)
    for choice in ("--basic-auth", "--access-token", "--insecure-public"):
        assert choice in msg


@pytest.mark.parametrize("kw", [
    {"basic_auth": "demo:password123"},
    {"access_token": "s3cret"},
    {"insecure_public": True},
], ids=["basic-auth", "access-token", "insecure-public"])
def test_public_with_a_choice_is_allowed(kw):
    check_public_safety(ServerConfig(ngrok=True, **kw))


def test_local_only_needs_no_protection_but_bad_basic_auth_is_refused():
    check_public_safety(ServerConfig())
    with pytest.raises(ServeError, match="8 to 128"):
        check_public_safety(ServerConfig(ngrok=True, basic_auth="demo:short"))


def test_cli_maps_flags_and_environment(monkeypatch):
    import run

    monkeypatch.setenv("FACEDAPPS_ACCESS_TOKEN", "from-env")
    monkeypatch.setenv("NGROK_AUTHTOKEN", "tok-env")
    ap = run.build_parser()
    args = ap.parse_args(["serve", "--ngrok", "--basic-auth", "u:password123"])
    assert (args.ngrok, args.basic_auth, args.access_token, args.ngrok_authtoken) == (
        True, "u:password123", "from-env", "tok-env")
    args = ap.parse_args(["serve", "--access-token", "flag", "--ngrok-authtoken", "t",
                          "--ngrok-path", "/opt/ngrok", "--insecure-public"])
    assert (args.access_token, args.ngrok_authtoken, args.ngrok_path, args.insecure_public) == (
        "flag", "t", "/opt/ngrok", True)


def test_a_bad_port_in_the_environment_is_a_usage_error_of_serve_only(monkeypatch, capsys):
    import run

    monkeypatch.setenv("FACEDAPPS_PORT", "abc")
    ap = run.build_parser()  # building every command's parser reads it: no crash there
    assert ap.parse_args(["predict", "x.jpg"]).images == ["x.jpg"]
    for argv in (["serve"], ["serve", "--port", "70000"]):
        with pytest.raises(SystemExit) as exc:
            ap.parse_args(argv)
        assert exc.value.code == 2
    assert "a port number 0-65535 (--port or FACEDAPPS_PORT), not 'abc'" in capsys.readouterr().err
    monkeypatch.setenv("FACEDAPPS_PORT", "9090")
    assert run.build_parser().parse_args(["serve"]).port == 9090


def test_cli_refuses_unprotected_public_before_loading_anything(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "serve", "--ngrok",
                        "--model", str(tmp_path / "no-model")],
                       capture_output=True, text=True, timeout=60, env=_child_env(tmp_path))
    assert r.returncode == 2
    assert "refusing to publish" in r.stderr and "--insecure-public" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- auth wiring

class FakeTunnel:
    public_url = "https://abcd-1-2-3-4.ngrok-free.app"


def test_connect_gets_authtoken_and_basic_auth(monkeypatch, tmp_path, no_download):
    calls = []

    def fake_connect(addr=None, proto=None, name=None, pyngrok_config=None, **options):
        calls.append((addr, proto, name, pyngrok_config, options))
        return FakeTunnel()

    monkeypatch.setattr(ngrok, "connect", fake_connect)
    pcfg = pyngrok_config(tmp_path, tmp_path / "ngrok")
    url = open_tunnel(8123, TOKEN, "demo:password123", host="0.0.0.0", pyngrok_config=pcfg)
    assert url == FakeTunnel.public_url
    (addr, proto, name, cfg, options), = calls
    assert (addr, proto, name) == ("http://127.0.0.1:8123", "http", "facedapps-8123")
    assert cfg is pcfg and cfg.auth_token == TOKEN
    policy = json.loads(options["traffic_policy"])
    action = policy["on_http_request"][0]["actions"][0]
    assert action["type"] == "basic-auth"
    assert action["config"]["credentials"] == ["demo:password123"]
    assert "host_header" not in options  # the public Host reaches the server (same-origin)
    assert not no_download


def test_without_basic_auth_no_policy_is_sent(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(ngrok, "connect",
                        lambda *a, **kw: calls.append(kw) or FakeTunnel())
    open_tunnel(8123, TOKEN, None, pyngrok_config=pyngrok_config(tmp_path, tmp_path / "n"))
    assert "traffic_policy" not in calls[0]


def test_missing_authtoken_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(ngrok, "connect", lambda *a, **kw: pytest.fail("must not connect"))
    with pytest.raises(TunnelError) as e:
        open_tunnel(8123, None, "demo:password123",
                    pyngrok_config=pyngrok_config(tmp_path, tmp_path / "ngrok"))
    assert str(e.value) == AUTHTOKEN_HELP


def test_authtoken_from_ngrok_config_file_is_used(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(ngrok, "connect", lambda *a, **kw: calls.append(kw) or FakeTunnel())
    (tmp_path / "ngrok.yml").write_text("version: '3'\nagent:\n  authtoken: from-file\n")
    pcfg = pyngrok_config(tmp_path, tmp_path / "ngrok")
    open_tunnel(8123, None, None, pyngrok_config=pcfg)
    assert calls[0]["pyngrok_config"].auth_token == "from-file"


# --------------------------------------------------------------------------- failure paths

def test_missing_agent_that_cannot_be_downloaded(tmp_path, no_download):
    path = tmp_path / "bin" / "ngrok"
    with pytest.raises(TunnelError) as e:
        open_tunnel(8123, TOKEN, "demo:password123", pyngrok_config=pyngrok_config(tmp_path, path))
    msg = str(e.value)
    print("message:", msg)
    assert f"not at {path}" in msg and "could not be downloaded" in msg and "--ngrok-path" in msg
    assert len(no_download) == 1  # pyngrok really tried (the stub refused)
    assert not path.exists()


def test_agent_that_cannot_be_started(tmp_path, no_download):
    path = tmp_path / "ngrok"
    path.write_text("not a program\n")
    path.chmod(0o600)
    with pytest.raises(TunnelError) as e:
        open_tunnel(8123, TOKEN, None, pyngrok_config=pyngrok_config(tmp_path, path))
    assert f"cannot start the ngrok agent at {path}" in str(e.value)
    assert not no_download


FAKE_AGENT = r'''
    import json, os, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    MODE = os.environ["FAKE_NGROK_MODE"]
    RECORD = os.environ["FAKE_NGROK_RECORD"]

    def log(lvl, msg, **kw):
        parts = ["t=2025-01-01T00:00:00+0000", "lvl=" + lvl, "msg=" + json.dumps(msg)]
        parts += ["%s=%s" % (k, json.dumps(str(v))) for k, v in kw.items()]
        print(" ".join(parts), flush=True)

    def record(kind, data):
        with open(RECORD, "a") as f:
            f.write(json.dumps({"kind": kind, "data": data}) + "\n")

    record("argv", sys.argv[1:])
    endpoints = {}

    class Api(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code, body=None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.reply(200, {"endpoints": list(endpoints.values()), "uri": "/api/endpoints"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            record("post", {"path": self.path, "body": body})
            if MODE == "refuse":
                return self.reply(400, {"error_code": 102, "status_code": 400,
                                        "msg": "invalid endpoint configuration",
                                        "details": {"err": "ERR_NGROK_2201 bad policy"}})
            ep = {"name": body["name"], "uri": "/api/endpoints/" + body["name"],
                  "url": "https://fake-demo.ngrok-free.app", "upstream": body["upstream"]}
            endpoints[body["name"]] = ep
            self.reply(201, ep)

        def do_DELETE(self):
            record("delete", self.path)
            endpoints.pop(self.path.rsplit("/", 1)[-1], None)
            self.reply(204)

    api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    log("info", "starting web service", obj="web", addr="127.0.0.1:%d" % api.server_port)
    if MODE in ("ok", "refuse"):
        log("info", "tunnel session started", obj="tunnels.session")
        log("info", "client session established", obj="csess")
        while True:  # pacing: the agent idles, as the real one does, until it is stopped
            time.sleep(1)
    elif MODE == "unreachable":  # the agent keeps retrying, as the real one does
        while True:
            log("eror", "failed to reconnect session", obj="tunnels.session",
                err="failed to dial ngrok server with address connect.ngrok-agent.com:443: "
                    "dial tcp: lookup connect.ngrok-agent.com: no such host")
            time.sleep(0.2)  # pacing: the agent's retry cadence
    else:  # badtoken
        log("eror", "session closing", obj="tunnels.session",
            err="authentication failed: The authtoken you specified is not valid. ERR_NGROK_107")
        sys.exit(1)
'''


@pytest.fixture
def fake_agent(tmp_path, monkeypatch):
    """An executable fake ngrok agent; returns (path, records())."""
    path = tmp_path / "fake-ngrok"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(FAKE_AGENT))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    rec = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_NGROK_RECORD", str(rec))

    def records() -> list[dict]:
        return [json.loads(ln) for ln in rec.read_text().splitlines()] if rec.exists() else []

    return path, records


def test_fake_agent_round_trip_wires_token_and_basic_auth(tmp_path, monkeypatch, fake_agent,
                                                          no_download):
    """Real pyngrok against a fake agent: the token reaches the agent's command line, the
    basic-auth policy its API; close() deletes the endpoint and stops the agent."""
    path, records = fake_agent
    monkeypatch.setenv("FAKE_NGROK_MODE", "ok")
    pcfg = pyngrok_config(tmp_path, path, timeout=20)
    opened, errors = [], []
    t = PublicTunnel(ServerConfig(port=8123, ngrok=True, ngrok_authtoken=TOKEN,
                                  basic_auth="demo:password123"),
                     opened.append, errors.append, pyngrok_config=pcfg)
    t.start()
    assert t.wait(30)
    assert errors == [] and opened == ["https://fake-demo.ngrok-free.app"]
    argv = next(r["data"] for r in records() if r["kind"] == "argv")
    assert argv[argv.index("--authtoken") + 1] == TOKEN
    post = next(r["data"] for r in records() if r["kind"] == "post")
    assert post["path"] == "/api/endpoints"
    body = post["body"]
    assert body["upstream"] == {"url": "http://127.0.0.1:8123"}
    action = json.loads(body["traffic_policy"])["on_http_request"][0]["actions"][0]
    assert action == {"type": "basic-auth",
                      "config": {"realm": "FaceDApps", "credentials": ["demo:password123"]}}
    assert process.is_process_running(str(path))
    t.close(timeout=10)
    assert {"kind": "delete", "data": "/api/endpoints/facedapps-8123"} in records()
    assert not process.is_process_running(str(path))
    assert not no_download


def test_unreachable_service_is_a_clear_error(tmp_path, monkeypatch, fake_agent):
    path, _ = fake_agent
    monkeypatch.setenv("FAKE_NGROK_MODE", "unreachable")
    t0 = time.monotonic()
    with pytest.raises(TunnelError) as e:
        open_tunnel(8123, TOKEN, "demo:password123",
                    pyngrok_config=pyngrok_config(tmp_path, path, timeout=2))
    msg = str(e.value)
    print(f"message after {time.monotonic() - t0:.1f} s:", msg)
    assert msg.startswith("cannot reach the ngrok service:") and "no such host" in msg
    assert not process.is_process_running(str(path))


def test_refused_authtoken_is_a_clear_error(tmp_path, monkeypatch, fake_agent):
    path, _ = fake_agent
    monkeypatch.setenv("FAKE_NGROK_MODE", "badtoken")
    with pytest.raises(TunnelError) as e:
        open_tunnel(8123, "dummy", None, pyngrok_config=pyngrok_config(tmp_path, path, 10))
    assert "ngrok refused the authtoken" in str(e.value) and "ERR_NGROK_107" in str(e.value)
    assert "dashboard.ngrok.com" in str(e.value)


def test_tunnel_refused_by_the_agent_stops_the_agent(tmp_path, monkeypatch, fake_agent):
    path, records = fake_agent
    monkeypatch.setenv("FAKE_NGROK_MODE", "refuse")
    with pytest.raises(TunnelError) as e:
        open_tunnel(8123, TOKEN, "demo:password123",
                    pyngrok_config=pyngrok_config(tmp_path, path, 20))
    assert "refused the tunnel (HTTP 400)" in str(e.value) and "ERR_NGROK_2201" in str(e.value)
    assert [r["kind"] for r in records()] == ["argv", "post"]
    assert not process.is_process_running(str(path))


@pytest.mark.parametrize("host,upstream", [("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"),
                                           ("192.168.1.5", "192.168.1.5"), ("::1", "[::1]")])
def test_upstream_address(host, upstream):
    assert tunnel.upstream_host(host) == upstream


def test_close_before_open_finishes_discards_the_tunnel(tmp_path, monkeypatch):
    """Shutdown during a slow connect: the late tunnel is closed, not announced."""
    import threading

    gate = threading.Event()
    closed = []
    monkeypatch.setattr(tunnel, "open_tunnel", lambda *a, **kw: gate.wait(5) and "https://x")
    monkeypatch.setattr(tunnel, "close_tunnel", lambda url, cfg: closed.append(url))
    opened, errors = [], []
    t = PublicTunnel(ServerConfig(ngrok=True), opened.append, errors.append,
                     pyngrok_config=object())
    t.start()
    t.close(timeout=0.1)
    gate.set()
    assert t.wait(5)
    assert opened == [] and errors == []
    assert closed.count("https://x") == 1  # the late tunnel was closed (once)


# --------------------------------------------------------------------------- serve()

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"),
               # belt and braces: should anything try to download, it fails at once
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("PYNGROK_NGROK_PATH", None)
    return env


def test_serve_keeps_serving_locally_when_the_tunnel_fails(tmp_path, tiny_model_dir):
    """``run.py serve --ngrok`` with an agent that cannot run: one clear error line, the
    local server answers, SIGTERM stops it cleanly."""
    agent = tmp_path / "ngrok"
    agent.write_text("not a program\n")
    agent.chmod(0o600)  # exists, so pyngrok does not try to download it; cannot execute
    port = _free_port()
    env = _child_env(tmp_path)
    env["NGROK_AUTHTOKEN"] = "dummy"
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "serve", "--ngrok", "--basic-auth",
             "user:password123", "--port", str(port), "--model", str(tiny_model_dir),
             "--ngrok-path", str(agent)], stdout=fo, stderr=fe, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 90  # bounded wait for the server's tunnel-error line
        while "no public URL" not in err.read_text():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, (out.read_text(), err.read_text())
            time.sleep(0.2)  # poll interval of that bounded wait
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200 and json.load(r)["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = out.read_text(), err.read_text()
    print(stdout, stderr, sep="\n")
    line = next(ln for ln in stderr.splitlines() if "no public URL" in ln)
    assert f"cannot start the ngrok agent at {agent}" in line
    assert f"Still serving locally on http://127.0.0.1:{port}" in line
    assert f"serving on http://127.0.0.1:{port}" in stdout
    assert "Public URL" not in stdout
    assert "Traceback" not in stderr and "never retrieved" not in stderr
    assert "Downloading ngrok" not in stdout + stderr
