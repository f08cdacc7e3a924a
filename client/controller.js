// The page's one owner of mutable state: configuration, camera stream, transport, the run
// counter and the readout statistics. Start is a sequence of small steps (begin run, check
// preconditions, open the camera, connect with fallback) and every asynchronous step checks that
// its run is still the current one, so Stop (or a failure) during a start cancels it cleanly.
//
// Collaborators (views, transports, fetch, camera, clock) are injectable so the flow can be
// exercised without a browser; main.js passes the real ones.
//
// The "Analyse a photo or video" panel (analyzer.js) is one of the views: it runs on its own,
// whether or not the camera does, and shares only the access token and the page's lifetime
// (leaving the page deletes its video job on the server).

import { DEFAULT_CONFIG, chosenTransport, fetchConfig } from "./config.js";
import { cameraMessage, openCamera, stopTracks } from "./camera.js";
import { RtcTransport } from "./rtc.js";
import { WsTransport } from "./wsstream.js";
import { Overlay } from "./overlay.js";
import { AnalysisPanel } from "./analyzer.js";
import { Bars, chooseFace } from "./bars.js";
import { Timeline } from "./timeline.js";
import { LiveAnnouncer } from "./announce.js";
import { RateMeter, STALE_MS, readoutTexts, transportLabel } from "./readout.js";

export const FALLBACK_NOTICE = "WebRTC did not connect; using WebSocket fallback";
const READOUT_INTERVAL_MS = 500;
const TOKEN_NEEDED = "This server requires an access token: enter it above or open the link that includes ?token=…";
const NO_CAMERA_API = "This page cannot use the camera: it needs HTTPS (or http://localhost) and a browser with camera support.";
const CAMERA_ENDED = "The camera stopped (it was disconnected or access was revoked).";

/**
 * The page's views: overlay, bars, live announcer, timeline and (when the page has its
 * elements) the analysis panel, on the elements of `ui`.
 */
export function createViews(ui, controller) {
  return {
    overlay: new Overlay(ui.overlay, ui.video),
    bars: new Bars(ui.bars),
    announcer: new LiveAnnouncer(ui.announce),
    timeline: new Timeline(
      { canvas: ui.timelineChart, select: ui.timelineFace, csv: ui.timelineCsv,
        json: ui.timelineJson, note: ui.timelineNote, legend: ui.timelineLegend },
      { token: () => controller.token(), preferredId: () => controller.preferredFaceId(),
        state: controller.app.timeline },
    ),
    analysis: ui.analyzeFile
      ? new AnalysisPanel(ui, {
        token: () => controller.token(), tokenMissing: () => controller.tokenMissing(),
        state: controller.app.analysis, createOverlay: (canvas, img) => new Overlay(canvas, img) })
      : null,
  };
}

/** A transport of `kind` ("webrtc" or "ws") with `options` (see RtcTransport / WsTransport). */
export function createTransport(kind, options) {
  return kind === "webrtc" ? new RtcTransport(options) : new WsTransport(options);
}

/** Public state, read by tests and tools as window.facedapps. */
function initialState() {
  return {
    state: "idle",
    transport: null,
    results: 0,
    lastResult: null,
    error: null,
    status: "",
    fallback: false,
    fallbackReason: null,
    session: null,
    config: { ...DEFAULT_CONFIG },
    configLoaded: false,
    fps: 0,
    rttMs: null,
    selectedFace: null, // the id of the face the user clicked (the bars follow it), or null
    timeline: {}, // filled by Timeline: {points, faceIds, face, polls, inFlight, polling, error}
    analysis: {}, // filled by AnalysisPanel: {phase, kind, name, job, upload, progress, ...}
  };
}

export class PageController {
  /**
   * @param {object} ui the page's elements (see main.js), plus `body`
   * @param {object} [deps] `params` (URLSearchParams of the link), `fetch`, `mediaDevices`
   *   (a function returning navigator.mediaDevices, read at Start), `createTransport`,
   *   `createViews`, `now` (ms clock), `log` (console)
   */
  constructor(ui, deps = {}) {
    this.ui = ui;
    this.params = deps.params || new URLSearchParams();
    this.fetch = deps.fetch || ((...args) => globalThis.fetch(...args));
    this.mediaDevices = deps.mediaDevices
      || (() => (globalThis.navigator ? globalThis.navigator.mediaDevices : undefined));
    this.createTransport = deps.createTransport || createTransport;
    this.now = deps.now || (() => performance.now());
    this.log = deps.log || console;

    this.app = initialState();
    this.config = { ...DEFAULT_CONFIG };
    this.stream = null;
    this.transport = null;
    this.run = 0; // incremented on every start/stop; callbacks of older runs are ignored
    this.meter = new RateMeter();
    this.rtt = null; // {ms, kind} of the latest round trip
    this.readoutTimer = null;

    const views = (deps.createViews || createViews)(ui, this);
    this.overlay = views.overlay;
    this.bars = views.bars;
    this.announcer = views.announcer;
    this.timeline = views.timeline;
    this.analysis = views.analysis || null;
  }

  /** Wire the controls, start the readout ticker and load /config (returns that promise). */
  init(win = globalThis.window) {
    const ui = this.ui;
    ui.start.addEventListener("click", () => this.startSafely());
    ui.stop.addEventListener("click", () => this.stop());
    if (ui.overlay) ui.overlay.addEventListener("click", (e) => this.pickAt(e));
    ui.mirror.addEventListener("change", () => this.applyMirror());
    this.applyMirror();
    if (this.analysis) this.analysis.init(win);
    if (win) win.addEventListener("pagehide", () => this.release());
    this.readoutTimer = setInterval(() => this.updateReadout(), READOUT_INTERVAL_MS);
    this.setState("idle");
    return this.loadConfig();
  }

  /** Stop the readout ticker (tests; the page never needs it). */
  dispose() {
    clearInterval(this.readoutTimer);
    this.readoutTimer = null;
  }

  // ------------------------------------------------------------ state and messages

  get busy() {
    return this.app.state === "starting" || this.app.state === "running";
  }

  setState(state) {
    this.app.state = state;
    this.ui.body.dataset.state = state;
    this.updateButtons();
  }

  /** Start waits for /config (it decides token and transport); Stop only while busy. */
  updateButtons() {
    const { start, stop } = this.ui;
    const doc = start.ownerDocument;
    const focused = doc ? doc.activeElement : null;
    start.disabled = this.busy || !this.app.configLoaded;
    stop.disabled = !this.busy;
    // A keyboard user keeps the focus: from Start to Stop once it starts, and back.
    if (focused === start && start.disabled && !stop.disabled) stop.focus();
    if (focused === stop && stop.disabled && !start.disabled) start.focus();
  }

  setStatus(text, warn = false) {
    this.app.status = text;
    this.ui.status.textContent = text;
    this.ui.status.classList.toggle("warn", warn);
  }

  showError(text) {
    this.app.error = text;
    this.ui.error.textContent = text;
    this.ui.error.hidden = false;
  }

  clearError() {
    this.app.error = null;
    this.ui.error.textContent = "";
    this.ui.error.hidden = true;
  }

  /** The access token: from the link (?token=) or the token field. */
  token() {
    return (this.params.get("token") || this.ui.token.value || "").trim();
  }

  /** What to do when this server needs a token and none is given; null when all is well. */
  tokenMissing() {
    return this.config.access_token_required && !this.token() ? TOKEN_NEEDED : null;
  }

  applyMirror() {
    const on = this.ui.mirror.checked;
    this.ui.video.classList.toggle("mirrored", on);
    this.overlay.setMirror(on);
  }

  // ------------------------------------------------------------ step: configuration

  /** GET /config; on failure the defaults are used and a warning says so. Enables Start. */
  async loadConfig() {
    const { config, error } = await fetchConfig(this.params.get("token"), this.fetch);
    if (error) {
      this.log.warn("GET /config failed; using defaults:", error);
      this.setStatus(`Could not load the server settings (${error.message}); using defaults.`, true);
    }
    this.config = config;
    this.app.config = config;
    this.app.configLoaded = true;
    this.ui.tokenField.hidden = !(config.access_token_required && !this.params.get("token"));
    this.updateButtons();
  }

  // ------------------------------------------------------------ start

  /** Start from a click: an unexpected exception still ends in the error state. */
  startSafely() {
    return this.start().catch((err) => this.fail(`Unexpected error: ${err && err.message ? err.message : err}`));
  }

  async start() {
    if (this.busy || !this.app.configLoaded) return;
    const my = this.beginRun();
    if (!this.checkPreconditions(my)) return;
    const cam = await this.startCamera(my);
    if (!cam) return;
    const mode = chosenTransport(this.params.get("transport"), this.config);
    if (mode !== "ws" && !(await this.connectWebRtc(my, cam, mode))) return;
    await this.connectWebSocket(my);
  }

  /** A new run: forget the previous one's results and transport. Returns the run number. */
  beginRun() {
    const my = ++this.run;
    this.clearError();
    this.resetStats();
    Object.assign(this.app, { fallback: false, fallbackReason: null, transport: null, session: null });
    this.setState("starting");
    return my;
  }

  /** Token and camera API present; otherwise fail with what to do. */
  checkPreconditions(my) {
    if (this.tokenMissing()) {
      this.fail(TOKEN_NEEDED, my);
      return false;
    }
    const md = this.mediaDevices();
    if (!md || !md.getUserMedia) {
      this.fail(NO_CAMERA_API, my);
      return false;
    }
    return true;
  }

  /** Open the camera and show it; null when it failed or the run was cancelled meanwhile. */
  async startCamera(my) {
    this.setStatus("Starting camera…");
    let cam;
    try {
      cam = await openCamera(this.mediaDevices());
    } catch (err) {
      this.fail(cameraMessage(err), my);
      return null;
    }
    if (my !== this.run) {
      stopTracks(cam);
      return null;
    }
    this.stream = cam;
    this.ui.video.srcObject = cam;
    const played = this.ui.video.play();
    if (played && played.catch) played.catch(() => { /* autoplay of a muted stream; nothing to do */ });
    for (const track of cam.getVideoTracks()) {
      track.addEventListener("ended", () => this.fail(CAMERA_ENDED, my));
    }
    return cam;
  }

  /** Callbacks shared by both transports; each ignores calls from an older run. */
  transportCallbacks(my, rttKind) {
    return {
      token: this.token(),
      onResult: (msg) => { if (my === this.run) this.handleResult(msg); },
      onLost: (reason) => this.fail(reason || "Connection lost", my),
      onServerError: (text) => { if (my === this.run) this.setStatus(`Server: ${text}`, true); },
      onRtt: (ms) => {
        if (my !== this.run) return;
        this.rtt = { ms, kind: rttKind };
        this.app.rttMs = Math.round(ms * 10) / 10;
      },
    };
  }

  /**
   * Try WebRTC. Returns true when the WebSocket fallback should be tried next, false when this
   * run is over (running, failed, or cancelled).
   */
  async connectWebRtc(my, cam, mode) {
    this.setStatus("Connecting over WebRTC…");
    const rtc = this.createTransport("webrtc", {
      ...this.transportCallbacks(my, "data-channel ping"), stream: cam, iceServers: this.config.ice_servers });
    this.transport = rtc; // so that Stop during the connect closes it
    try {
      await rtc.start(this.config.webrtc_timeout_ms);
    } catch (err) {
      if (my !== this.run) return false;
      if (mode === "webrtc" || err.fatal) {
        this.fail(err.message, my);
        return false;
      }
      this.log.warn("WebRTC failed; falling back to WebSocket:", err.message);
      this.app.fallback = true;
      this.app.fallbackReason = err.message;
      this.setStatus(`${FALLBACK_NOTICE} (${err.message})`, true);
      return true;
    }
    if (my !== this.run) {
      rtc.close();
      return false;
    }
    this.running(rtc);
    return false;
  }

  /** Connect over /ws/stream (directly, or as the fallback). */
  async connectWebSocket(my) {
    const fallback = this.app.fallback;
    if (!fallback) this.setStatus("Connecting over WebSocket…");
    const ws = this.createTransport("ws", { ...this.transportCallbacks(my, "frame → result"), video: this.ui.video });
    this.transport = ws;
    try {
      await ws.start(this.config.webrtc_timeout_ms);
    } catch (err) {
      this.fail(fallback ? `${FALLBACK_NOTICE}, but the WebSocket failed too: ${err.message}` : err.message, my);
      return;
    }
    if (my !== this.run) {
      ws.close();
      return;
    }
    this.running(ws, fallback ? `${FALLBACK_NOTICE} (${this.app.fallbackReason}).` : null);
  }

  /** Transport `t` is up: show it and poll its session's timeline. */
  running(t, notice = null) {
    this.transport = t;
    this.app.transport = t.name;
    if (t.session) this.app.session = t.session;
    this.setState("running");
    if (notice) this.setStatus(notice, true);
    else this.setStatus(`Running over ${transportLabel(t.name, this.app.fallback)}. Results appear on the video.`);
    this.updateReadout();
    this.syncTimeline();
  }

  // ------------------------------------------------------------ results

  /** One result message: count it, draw it, update bars, announcement, readout and timeline. */
  handleResult(msg) {
    const now = this.now();
    this.app.results += 1;
    this.app.lastResult = msg;
    if (msg.session) this.app.session = msg.session;
    this.meter.add(now);
    const faces = Array.isArray(msg.faces) ? msg.faces : [];
    const face = faces.length ? chooseFace(faces, this.app.selectedFace) : null;
    this.overlay.draw(msg);
    this.bars.show(face);
    // An uncertain face announces nothing (the last confident label stays the announced one).
    this.announcer.update(face && !face.uncertain ? face.label : null, now);
    this.updateReadout();
    this.syncTimeline();
  }

  /** The face the bars show (the clicked one, else the largest box of the latest result),
   * plotted by default. */
  preferredFaceId() {
    const last = this.app.lastResult;
    const faces = last && Array.isArray(last.faces) ? last.faces : [];
    const running = this.app.state === "running" && faces.length;
    const f = running ? chooseFace(faces, this.app.selectedFace) : null;
    return f && f.id !== undefined ? f.id : null;
  }

  /** A click on the video: the face under it is the one the bars follow (a second click on it,
   * or a click beside every face, goes back to the largest). */
  pickAt(event) {
    const r = this.ui.overlay.getBoundingClientRect();
    const f = this.overlay.faceAt(event.clientX - r.left, event.clientY - r.top);
    const id = f && f.id !== undefined && f.id !== null ? f.id : null;
    this.app.selectedFace = id === this.app.selectedFace ? null : id;
    this.overlay.select(this.app.selectedFace);
    const last = this.app.lastResult;
    if (this.app.state === "running" && last && Array.isArray(last.faces) && last.faces.length) {
      this.bars.show(chooseFace(last.faces, this.app.selectedFace));
    }
  }

  /** Poll the timeline of the live session (its id may arrive with the first result). */
  syncTimeline() {
    if (this.app.state === "running" && this.app.session && this.timeline.session !== this.app.session) {
      this.timeline.start(this.app.session);
    }
  }

  resetStats() {
    this.meter.reset();
    this.rtt = null;
    this.app.fps = 0;
    this.app.rttMs = null;
  }

  updateReadout() {
    const now = this.now();
    const rate = this.meter.rate(now);
    this.app.fps = Math.round(rate * 10) / 10;
    const live = this.app.state === "running";
    const t = readoutTexts({ live, transport: this.app.transport, fallback: this.app.fallback,
                             lastResult: this.app.lastResult, rate, started: this.meter.started,
                             rtt: this.rtt });
    const ui = this.ui;
    ui.rTransport.textContent = t.transport;
    ui.rFps.textContent = t.fps;
    ui.rLatency.textContent = t.latency;
    ui.rRtt.textContent = t.rtt;
    ui.rFaces.textContent = t.faces;
    // Results stopped coming: do not leave stale boxes on screen.
    if (live && this.meter.isStale(now, STALE_MS) && this.overlay.last) {
      this.overlay.clear();
      this.bars.clear();
    }
  }

  // ------------------------------------------------------------ stop

  /** Close the transport, stop the camera and clear the views (no state change). */
  teardown() {
    this.timeline.stop();
    if (this.transport) this.transport.close();
    this.transport = null;
    stopTracks(this.stream);
    this.stream = null;
    this.ui.video.srcObject = null;
    this.app.selectedFace = null;
    this.overlay.select(null);
    this.overlay.clear();
    this.bars.clear();
    this.announcer.clear();
    this.app.transport = null;
    this.updateReadout();
  }

  /** End run `my` (any run when omitted) with an error shown; later calls for it are ignored. */
  fail(message, my) {
    if (my !== undefined && my !== this.run) return;
    this.run += 1;
    this.teardown();
    this.setState("error");
    this.showError(message);
    this.setStatus("Stopped. Click Start to try again.");
  }

  stop() {
    this.run += 1;
    this.teardown();
    this.clearError();
    this.setState("idle");
    this.setStatus("Stopped. The camera is off.");
  }

  /**
   * The page is going away: free the camera and the server's session, and delete an analysed
   * video's results on the server, without UI changes.
   */
  release() {
    if (this.transport || this.stream) {
      this.run += 1;
      this.teardown();
    }
    if (this.analysis) this.analysis.release();
  }
}
