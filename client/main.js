// FaceDApps page: camera on Start, WebRTC transport with a WebSocket fallback, overlay, bars,
// readout, live timeline. State for tests and tools: window.facedapps and <body data-state>.

import { RtcTransport, withToken } from "./rtc.js";
import { WsTransport } from "./wsstream.js";
import { Overlay } from "./overlay.js";
import { Bars, largestFace } from "./bars.js";
import { Timeline } from "./timeline.js";

const DEFAULT_CONFIG = Object.freeze({
  ice_servers: [],
  transport: "auto",
  webrtc_timeout_ms: 5000,
  access_token_required: false,
});
const TRANSPORTS = ["auto", "webrtc", "ws"];
const FALLBACK_NOTICE = "WebRTC did not connect; using WebSocket fallback";
const FPS_WINDOW_MS = 2000;
const STALE_MS = 1500;
const CAMERA_CONSTRAINTS = {
  audio: false,
  video: {
    width: { ideal: 640, max: 640 },
    height: { ideal: 480, max: 480 },
    frameRate: { ideal: 15 },
  },
};

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const ui = {
  start: $("start"),
  stop: $("stop"),
  mirror: $("mirror"),
  tokenField: $("token-field"),
  token: $("token"),
  status: $("status"),
  error: $("error"),
  video: $("video"),
  overlay: $("overlay"),
  bars: $("bars"),
  rTransport: $("r-transport"),
  rFps: $("r-fps"),
  rLatency: $("r-latency"),
  rRtt: $("r-rtt"),
  rFaces: $("r-faces"),
  timelineChart: $("timeline-chart"),
  timelineFace: $("timeline-face"),
  timelineCsv: $("timeline-csv"),
  timelineJson: $("timeline-json"),
  timelineNote: $("timeline-note"),
  timelineLegend: $("timeline-legend"),
};

const overlay = new Overlay(ui.overlay, ui.video);
const bars = new Bars(ui.bars);

/** Public state, read by tests and tools. */
const app = {
  state: "idle",
  transport: null,
  results: 0,
  lastResult: null,
  error: null,
  status: "",
  fallback: false,
  session: null,
  config: { ...DEFAULT_CONFIG },
  configLoaded: false,
  fps: 0,
  rttMs: null,
  timeline: {}, // filled by Timeline: {points, faceIds, face, polls, inFlight, polling, error}
};
window.facedapps = app;

let config = { ...DEFAULT_CONFIG };
let stream = null;
let transport = null;
let run = 0; // incremented on every start/stop; callbacks of older runs are ignored
let arrivals = []; // result arrival times (ms) within the fps window
let firstResultAt = 0;
let lastResultAt = 0;
let rtt = null;

const timeline = new Timeline(
  { canvas: ui.timelineChart, select: ui.timelineFace, csv: ui.timelineCsv,
    json: ui.timelineJson, note: ui.timelineNote, legend: ui.timelineLegend },
  {
    token: () => token(),
    // The face the bars show (largest box of the latest result) is plotted by default.
    preferredId: () => {
      const faces = app.lastResult && Array.isArray(app.lastResult.faces) ? app.lastResult.faces : [];
      const f = app.state === "running" && faces.length ? largestFace(faces) : null;
      return f && f.id !== undefined ? f.id : null;
    },
    state: app.timeline,
  },
);

/** Poll the timeline of the live session (its id may arrive with the first result). */
function syncTimeline() {
  if (app.state === "running" && app.session && timeline.session !== app.session) {
    timeline.start(app.session);
  }
}

// ---------------------------------------------------------------- state and messages

function setState(state) {
  app.state = state;
  document.body.dataset.state = state;
  const busy = state === "starting" || state === "running";
  ui.start.disabled = busy;
  ui.stop.disabled = !busy;
}

function setStatus(text, warn = false) {
  app.status = text;
  ui.status.textContent = text;
  ui.status.classList.toggle("warn", warn);
}

function showError(text) {
  app.error = text;
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  app.error = null;
  ui.error.textContent = "";
  ui.error.hidden = true;
}

function token() {
  return (params.get("token") || ui.token.value || "").trim();
}

// ---------------------------------------------------------------- configuration

function normalizeConfig(c) {
  const out = { ...DEFAULT_CONFIG };
  if (!c || typeof c !== "object") return out;
  if (Array.isArray(c.ice_servers)) {
    out.ice_servers = c.ice_servers
      .filter((s) => s && (typeof s.urls === "string" || Array.isArray(s.urls)))
      .map((s) => {
        const server = { urls: s.urls };
        if (typeof s.username === "string") server.username = s.username;
        if (typeof s.credential === "string") server.credential = s.credential;
        return server;
      });
  }
  if (TRANSPORTS.includes(c.transport)) out.transport = c.transport;
  const t = Number(c.webrtc_timeout_ms);
  if (Number.isFinite(t) && t > 0) out.webrtc_timeout_ms = t;
  out.access_token_required = c.access_token_required === true;
  return out;
}

async function loadConfig() {
  try {
    const resp = await fetch(withToken("/config", params.get("token")), { cache: "no-store" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    config = normalizeConfig(await resp.json());
  } catch (err) {
    console.warn("GET /config failed; using defaults:", err);
    config = { ...DEFAULT_CONFIG };
  }
  app.config = config;
  app.configLoaded = true;
  ui.tokenField.hidden = !(config.access_token_required && !params.get("token"));
}

function chosenTransport() {
  const forced = params.get("transport");
  return TRANSPORTS.includes(forced) ? forced : config.transport;
}

// ---------------------------------------------------------------- readout

function transportLabel() {
  if (!app.transport) return "–";
  if (app.transport === "webrtc") return "WebRTC";
  return app.fallback ? "WebSocket (fallback)" : "WebSocket";
}

function resetStats() {
  arrivals = [];
  firstResultAt = 0;
  lastResultAt = 0;
  rtt = null;
  app.fps = 0;
  app.rttMs = null;
}

function updateReadout() {
  const now = performance.now();
  while (arrivals.length && now - arrivals[0] > FPS_WINDOW_MS) arrivals.shift();
  const span = Math.min(FPS_WINDOW_MS, now - firstResultAt);
  const fps = firstResultAt && span > 250 ? (arrivals.length * 1000) / span : 0;
  app.fps = Math.round(fps * 10) / 10;

  ui.rTransport.textContent = transportLabel();
  const live = app.state === "running";
  ui.rFps.textContent = live && firstResultAt ? `${fps.toFixed(1)} results/s` : "–";
  const last = app.lastResult;
  ui.rLatency.textContent = live && last && Number.isFinite(last.latency_ms)
    ? `${last.latency_ms.toFixed(1)} ms` : "–";
  ui.rRtt.textContent = live && rtt
    ? `${rtt.ms.toFixed(0)} ms (${rtt.kind})` : "–";
  ui.rFaces.textContent = live && last && Array.isArray(last.faces) ? String(last.faces.length) : "–";

  // Results stopped coming: do not leave stale boxes on screen.
  if (live && lastResultAt && now - lastResultAt > STALE_MS && overlay.last) {
    overlay.clear();
    bars.clear();
  }
}

setInterval(updateReadout, 500);

// ---------------------------------------------------------------- results

function onResult(msg) {
  const now = performance.now();
  app.results += 1;
  app.lastResult = msg;
  if (msg.session) app.session = msg.session;
  if (!firstResultAt) firstResultAt = now;
  lastResultAt = now;
  arrivals.push(now);
  const faces = Array.isArray(msg.faces) ? msg.faces : [];
  overlay.draw(msg);
  bars.show(faces.length ? largestFace(faces) : null);
  updateReadout();
  syncTimeline();
}

function onRtt(kind) {
  return (ms) => {
    rtt = { ms, kind };
    app.rttMs = Math.round(ms * 10) / 10;
  };
}

// ---------------------------------------------------------------- camera

function cameraMessage(err) {
  const name = (err && err.name) || "";
  if (name === "NotAllowedError" || name === "PermissionDeniedError" || name === "SecurityError") {
    return "Camera access was denied. Allow the camera for this site (address bar) and click Start again.";
  }
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return "No suitable camera was found.";
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
    return "The camera could not be started. Is another application using it?";
  }
  return `Could not start the camera: ${name || "error"}${err && err.message ? `: ${err.message}` : ""}`;
}

async function openCamera() {
  try {
    return await navigator.mediaDevices.getUserMedia(CAMERA_CONSTRAINTS);
  } catch (err) {
    // A camera that cannot meet the size limits: take what it has (the server scales it).
    if (err && err.name === "OverconstrainedError") {
      return navigator.mediaDevices.getUserMedia({ audio: false, video: true });
    }
    throw err;
  }
}

function stopCamera() {
  if (stream) {
    for (const track of stream.getTracks()) track.stop();
  }
  stream = null;
  ui.video.srcObject = null;
}

// ---------------------------------------------------------------- start / stop

function teardown() {
  timeline.stop();
  if (transport) transport.close();
  transport = null;
  stopCamera();
  overlay.clear();
  bars.clear();
  app.transport = null;
  updateReadout();
}

function fail(message, my) {
  if (my !== undefined && my !== run) return;
  run += 1;
  teardown();
  setState("error");
  showError(message);
  setStatus("Stopped. Click Start to try again.");
}

function lost(my) {
  return (reason) => fail(reason || "Connection lost", my);
}

function serverError(my) {
  return (text) => {
    if (my === run) setStatus(`Server: ${text}`, true);
  };
}

function running(t, notice) {
  transport = t;
  app.transport = t.name;
  if (t.session) app.session = t.session;
  setState("running");
  if (notice) setStatus(notice, true);
  else setStatus(`Running over ${transportLabel()}. Results appear on the video.`);
  updateReadout();
  syncTimeline();
}

async function start() {
  if (app.state === "starting" || app.state === "running") return;
  const my = ++run;
  clearError();
  resetStats();
  app.fallback = false;
  app.transport = null;
  app.session = null;
  setState("starting");

  if (config.access_token_required && !token()) {
    fail("This server requires an access token: enter it above or open the link that includes ?token=…", my);
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    fail("This page cannot use the camera: it needs HTTPS (or http://localhost) and a browser with camera support.", my);
    return;
  }

  setStatus("Starting camera…");
  let cam;
  try {
    cam = await openCamera();
  } catch (err) {
    fail(cameraMessage(err), my);
    return;
  }
  if (my !== run) {
    for (const track of cam.getTracks()) track.stop();
    return;
  }
  stream = cam;
  ui.video.srcObject = cam;
  ui.video.play().catch(() => { /* autoplay of a muted stream; nothing to do */ });
  for (const track of cam.getVideoTracks()) {
    track.addEventListener("ended", () => fail("The camera stopped (it was disconnected or access was revoked).", my));
  }

  const mode = chosenTransport();
  const common = { token: token(), onResult: (m) => { if (my === run) onResult(m); }, onLost: lost(my),
                   onServerError: serverError(my) };

  if (mode !== "ws") {
    setStatus("Connecting over WebRTC…");
    const rtc = new RtcTransport({ ...common, stream: cam, iceServers: config.ice_servers, onRtt: onRtt("data-channel ping") });
    transport = rtc;
    try {
      await rtc.start(config.webrtc_timeout_ms);
      if (my !== run) {
        rtc.close();
        return;
      }
      running(rtc);
      return;
    } catch (err) {
      if (my !== run) return;
      if (mode === "webrtc" || err.fatal) {
        fail(err.message, my);
        return;
      }
      console.warn("WebRTC failed; falling back to WebSocket:", err.message);
      app.fallback = true;
      app.fallbackReason = err.message;
      setStatus(`${FALLBACK_NOTICE} (${err.message})`, true);
    }
  }

  if (!app.fallback) setStatus("Connecting over WebSocket…");
  const ws = new WsTransport({ ...common, video: ui.video, onRtt: onRtt("frame → result") });
  transport = ws;
  try {
    await ws.start(config.webrtc_timeout_ms);
  } catch (err) {
    fail(app.fallback ? `${FALLBACK_NOTICE}, but the WebSocket failed too: ${err.message}` : err.message, my);
    return;
  }
  if (my !== run) {
    ws.close();
    return;
  }
  running(ws, app.fallback ? `${FALLBACK_NOTICE} (${app.fallbackReason}).` : null);
}

function stop() {
  run += 1;
  teardown();
  clearError();
  setState("idle");
  setStatus("Stopped. The camera is off.");
}

// ---------------------------------------------------------------- wiring

ui.start.addEventListener("click", () => {
  start().catch((err) => fail(`Unexpected error: ${err && err.message ? err.message : err}`));
});
ui.stop.addEventListener("click", stop);
ui.mirror.addEventListener("change", () => {
  ui.video.classList.toggle("mirrored", ui.mirror.checked);
  overlay.setMirror(ui.mirror.checked);
});
ui.video.classList.toggle("mirrored", ui.mirror.checked);
overlay.setMirror(ui.mirror.checked);
window.addEventListener("pagehide", () => {
  if (transport || stream) {
    run += 1;
    teardown();
  }
});

setState("idle");
loadConfig();
