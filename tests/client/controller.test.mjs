// The page's start/stop flow (client/controller.js) with fake elements, views, camera and
// transports: config gating, fallback, fatal errors, cancellation and result handling.
import { test } from "node:test";
import assert from "node:assert/strict";

import { FALLBACK_NOTICE, PageController } from "../../client/controller.js";
import { LiveAnnouncer } from "../../client/announce.js";

/** A stand-in for an element: the properties and methods the controller uses. */
function el(props = {}) {
  const classes = new Set();
  const listeners = {};
  return {
    textContent: "", hidden: false, disabled: false, value: "", checked: false, dataset: {},
    srcObject: null,
    classList: {
      toggle: (c, on) => (on ? classes.add(c) : classes.delete(c)),
      contains: (c) => classes.has(c),
    },
    addEventListener: (type, fn) => { (listeners[type] ||= []).push(fn); },
    dispatch: (type, event) => (listeners[type] || []).forEach((fn) => fn(event)),
    play: () => Promise.resolve(),
    ...props,
  };
}

function makeUi() {
  const names = ["body", "start", "stop", "mirror", "tokenField", "token", "status", "error",
                 "announce", "video", "rTransport", "rFps", "rLatency", "rRtt", "rFaces"];
  const ui = Object.fromEntries(names.map((n) => [n, el()]));
  ui.overlay = el({ getBoundingClientRect: () => ({ left: 10, top: 20 }) });
  return ui;
}

function fakeViews(ui) {
  return {
    overlay: { last: null, mirror: null, selected: null, hit: null, at: null,
               draw(m) { this.last = m; }, clear() { this.last = null; },
               setMirror(on) { this.mirror = on; }, select(id) { this.selected = id; },
               faceAt(x, y) { this.at = [x, y]; return this.hit; } },
    bars: { face: undefined, show(f) { this.face = f; }, clear() { this.face = null; } },
    announcer: new LiveAnnouncer(ui.announce),
    timeline: { session: null, started: [], start(s) { this.session = s; this.started.push(s); },
                stop() { this.session = null; } },
  };
}

/** A transport whose start() is settled by the test. */
class FakeTransport {
  constructor(kind, options) {
    this.name = kind;
    this.options = options;
    this.closed = false;
    this.session = kind === "ws" ? "ws-session" : "rtc-session";
    this.started = new Promise((resolve, reject) => { this.resolve = resolve; this.reject = reject; });
  }

  start(timeoutMs) {
    this.timeoutMs = timeoutMs;
    return this.started;
  }

  close() { this.closed = true; }
}

function fakeCamera() {
  const tracks = [];
  const camera = {
    calls: 0,
    tracks,
    fail: null,
    mediaDevices: {
      getUserMedia: async () => {
        camera.calls += 1;
        if (camera.fail) throw camera.fail;
        const track = { stopped: false, stop() { this.stopped = true; }, addEventListener() {} };
        tracks.push(track);
        return { getTracks: () => [track], getVideoTracks: () => [track] };
      },
    },
  };
  return camera;
}

const json = (body, status = 200) => new Response(JSON.stringify(body), { status });

function setup({ config = {}, params = "", fetchFn } = {}) {
  const ui = makeUi();
  const camera = fakeCamera();
  const transports = [];
  const warnings = [];
  let now = 1000;
  const c = new PageController(ui, {
    params: new URLSearchParams(params),
    fetch: fetchFn || (async () => json({ ice_servers: [], transport: "auto", webrtc_timeout_ms: 1500,
                                          access_token_required: false, ...config })),
    mediaDevices: () => camera.mediaDevices,
    createTransport: (kind, options) => {
      const t = new FakeTransport(kind, options);
      transports.push(t);
      return t;
    },
    createViews: (u) => fakeViews(u),
    now: () => now,
    log: { warn: (...a) => warnings.push(a) },
  });
  const clock = { advance: (ms) => { now += ms; }, get now() { return now; } };
  return { c, ui, camera, transports, warnings, clock };
}

/** Let pending promise callbacks run. */
const flush = () => new Promise((resolve) => setImmediate(resolve));

/** Wait for a start() to finish; fail (instead of hanging the run) when it does not. */
async function finished(promise, ms = 1000) {
  let timer;
  const outcome = await Promise.race([
    promise.then(() => "finished"),
    new Promise((resolve) => { timer = setTimeout(resolve, ms, "still pending"); }),
  ]);
  clearTimeout(timer);
  assert.equal(outcome, "finished", "start() did not finish");
}

function result(label = "happy", extra = {}) {
  return { type: "result", session: "rtc-session", frame: 1, width: 640, height: 480, latency_ms: 5,
           faces: [{ id: 1, box: [10, 10, 100, 100], label, score: 0.9, scores: { [label]: 0.9 } }],
           ...extra };
}

test("Start is disabled until /config has loaded", async (t) => {
  const { c, ui } = setup({ config: { transport: "ws" } });
  const loading = c.init(null);
  t.after(() => c.dispose()); // the readout ticker would keep Node alive
  assert.equal(ui.start.disabled, true);
  assert.equal(c.app.configLoaded, false);
  await c.start(); // ignored: no config yet
  assert.equal(c.app.state, "idle");
  await loading;
  assert.equal(ui.start.disabled, false);
  assert.equal(ui.stop.disabled, true);
  assert.equal(c.app.configLoaded, true);
  assert.equal(c.app.config.transport, "ws");
  assert.equal(ui.body.dataset.state, "idle");
});

test("a failed /config enables Start with the defaults and says so", async (t) => {
  const { c, ui, warnings } = setup({ fetchFn: async () => json({ error: "x" }, 500) });
  t.after(() => c.dispose());
  await c.init(null);
  assert.equal(ui.start.disabled, false);
  assert.equal(c.app.configLoaded, true);
  assert.equal(c.app.config.transport, "auto");
  assert.equal(c.app.state, "idle");
  assert.equal(c.app.error, null);
  assert.match(ui.status.textContent, /Could not load the server settings \(HTTP 500\); using defaults/);
  assert.equal(ui.status.classList.contains("warn"), true);
  assert.equal(warnings.length, 1);
});

test("the token field shows only when a token is required and not in the link", async () => {
  const a = setup({ config: { access_token_required: true } });
  await a.c.loadConfig();
  assert.equal(a.ui.tokenField.hidden, false);
  const b = setup({ config: { access_token_required: true }, params: "token=t" });
  await b.c.loadConfig();
  assert.equal(b.ui.tokenField.hidden, true);
});

test("auto: WebRTC connects and results flow", async () => {
  const { c, ui, transports } = setup();
  await c.loadConfig();
  const starting = c.start();
  assert.equal(c.app.state, "starting");
  assert.equal(ui.start.disabled, true);
  assert.equal(ui.stop.disabled, false);
  await flush();
  assert.equal(transports.length, 1);
  const rtc = transports[0];
  assert.equal(rtc.name, "webrtc");
  assert.equal(rtc.timeoutMs, 1500);
  rtc.resolve();
  await finished(starting);
  assert.equal(c.app.state, "running");
  assert.equal(c.app.transport, "webrtc");
  assert.equal(c.app.session, "rtc-session");
  assert.equal(ui.rTransport.textContent, "WebRTC");
  assert.equal(ui.status.textContent, "Running over WebRTC. Results appear on the video.");
  assert.equal(c.timeline.session, "rtc-session");

  rtc.options.onResult(result("happy"));
  assert.equal(c.app.results, 1);
  assert.equal(c.app.lastResult.faces[0].label, "happy");
  assert.equal(c.bars.face.label, "happy");
  assert.equal(ui.rFaces.textContent, "1");
  assert.equal(ui.rLatency.textContent, "5.0 ms");
  assert.equal(ui.announce.textContent, "Expression: happy");
  assert.equal(c.preferredFaceId(), 1);

  rtc.options.onRtt(12.34);
  assert.equal(c.app.rttMs, 12.3);
});

test("announcements are throttled by the controller's clock", async () => {
  const { c, ui, transports, clock } = setup();
  await c.loadConfig();
  const starting = c.start();
  await flush();
  transports[0].resolve();
  await finished(starting);
  const send = (label) => transports[0].options.onResult(result(label));
  send("happy");
  clock.advance(500);
  send("sad");
  assert.equal(ui.announce.textContent, "Expression: happy");
  clock.advance(1600);
  send("sad");
  assert.equal(ui.announce.textContent, "Expression: sad");
  c.stop();
  assert.equal(ui.announce.textContent, "");
});

test("auto: WebRTC fails, the WebSocket fallback takes over", async () => {
  const { c, ui, transports, warnings } = setup();
  await c.loadConfig();
  const starting = c.start();
  await flush();
  transports[0].reject(Object.assign(new Error("WebRTC did not connect within 1.5 s"), { timeout: true }));
  await flush();
  assert.equal(c.app.fallback, true);
  assert.equal(transports.length, 2);
  assert.equal(transports[1].name, "ws");
  assert.equal(transports[1].options.video, ui.video);
  transports[1].resolve();
  await finished(starting);
  assert.equal(c.app.state, "running");
  assert.equal(c.app.transport, "ws");
  assert.equal(c.app.fallbackReason, "WebRTC did not connect within 1.5 s");
  assert.equal(ui.status.textContent, `${FALLBACK_NOTICE} (WebRTC did not connect within 1.5 s).`);
  assert.equal(ui.rTransport.textContent, "WebSocket (fallback)");
  assert.equal(warnings.length, 1);
});

test("a fallback whose WebSocket fails too ends in the error state", async () => {
  const { c, transports, camera } = setup();
  await c.loadConfig();
  const starting = c.start();
  await flush();
  transports[0].reject(new Error("no ICE"));
  await flush();
  transports[1].reject(new Error("WebSocket did not open in time"));
  await finished(starting);
  assert.equal(c.app.state, "error");
  assert.equal(c.app.error, `${FALLBACK_NOTICE}, but the WebSocket failed too: WebSocket did not open in time`);
  assert.equal(c.app.transport, null);
  assert.equal(camera.tracks[0].stopped, true);
});

test("a fatal WebRTC error (capacity) does not fall back", async () => {
  const { c, ui, transports, camera } = setup();
  await c.loadConfig();
  const starting = c.start();
  await flush();
  transports[0].reject(Object.assign(new Error("Server at capacity (16 sessions)"), { fatal: true }));
  await finished(starting);
  assert.equal(transports.length, 1);
  assert.equal(c.app.state, "error");
  assert.equal(ui.body.dataset.state, "error");
  assert.equal(ui.error.textContent, "Server at capacity (16 sessions)");
  assert.equal(ui.error.hidden, false);
  assert.equal(ui.video.srcObject, null);
  assert.equal(camera.tracks[0].stopped, true);
  assert.equal(ui.start.disabled, false);
  assert.equal(ui.stop.disabled, true);
});

test("?transport=webrtc: a WebRTC failure is final", async () => {
  const { c, transports } = setup({ params: "transport=webrtc" });
  await c.loadConfig();
  const starting = c.start();
  await flush();
  transports[0].reject(new Error("timeout"));
  await finished(starting);
  assert.equal(transports.length, 1);
  assert.equal(c.app.error, "timeout");
});

test("?transport=ws goes straight to the WebSocket", async () => {
  const { c, ui, transports } = setup({ params: "transport=ws" });
  await c.loadConfig();
  const starting = c.start();
  await flush();
  assert.equal(transports.length, 1);
  assert.equal(transports[0].name, "ws");
  assert.equal(ui.status.textContent, "Connecting over WebSocket…");
  transports[0].resolve();
  await finished(starting);
  assert.equal(c.app.transport, "ws");
  assert.equal(c.app.fallback, false);
  assert.equal(ui.rTransport.textContent, "WebSocket");
});

test("Stop while connecting cancels the start; a late connect is closed", async () => {
  const { c, ui, transports, camera } = setup();
  await c.loadConfig();
  const starting = c.start();
  await flush();
  c.stop();
  assert.equal(c.app.state, "idle");
  assert.equal(transports[0].closed, true);
  assert.equal(camera.tracks[0].stopped, true);
  transports[0].resolve(); // connects after all
  await finished(starting);
  assert.equal(c.app.state, "idle");
  assert.equal(c.app.transport, null);
  // Callbacks of the cancelled run are ignored.
  transports[0].options.onResult(result());
  transports[0].options.onLost("Connection lost");
  assert.equal(c.app.results, 0);
  assert.equal(c.app.state, "idle");
  assert.equal(ui.status.textContent, "Stopped. The camera is off.");
});

test("a lost connection ends the run with an error; Start works again", async () => {
  const { c, transports } = setup();
  await c.loadConfig();
  let starting = c.start();
  await flush();
  transports[0].resolve();
  await finished(starting);
  transports[0].options.onLost("Connection lost (WebRTC failed)");
  assert.equal(c.app.state, "error");
  assert.equal(c.app.error, "Connection lost (WebRTC failed)");
  assert.equal(transports[0].closed, true);

  starting = c.start();
  assert.equal(c.app.error, null);
  await flush();
  transports[1].resolve();
  await finished(starting);
  assert.equal(c.app.state, "running");
  transports[0].options.onResult(result()); // the old transport's late result
  assert.equal(c.app.results, 0);
});

test("a token is required but missing: no camera, an error", async () => {
  const { c, camera } = setup({ config: { access_token_required: true } });
  await c.loadConfig();
  await c.start();
  assert.equal(c.app.state, "error");
  assert.match(c.app.error, /access token/);
  assert.equal(camera.calls, 0);
});

test("the token from the field is passed to the transport", async () => {
  const { c, ui, transports } = setup({ config: { access_token_required: true } });
  await c.loadConfig();
  ui.token.value = "  s3cret ";
  const starting = c.start();
  await flush();
  assert.equal(transports[0].options.token, "s3cret");
  transports[0].resolve();
  await finished(starting);
  assert.equal(c.app.state, "running");
});

test("camera denied: a message, Start enabled again", async () => {
  const { c, ui, camera, transports } = setup();
  await c.loadConfig();
  camera.fail = Object.assign(new Error("Permission denied"), { name: "NotAllowedError" });
  await c.start();
  assert.equal(c.app.state, "error");
  assert.match(ui.error.textContent, /denied/);
  assert.equal(transports.length, 0);
  assert.equal(ui.start.disabled, false);
});

test("no camera API: an error without asking for the camera", async () => {
  const { c } = setup();
  c.mediaDevices = () => undefined;
  await c.loadConfig();
  await c.start();
  assert.equal(c.app.state, "error");
  assert.match(c.app.error, /cannot use the camera/);
});

test("results that stop coming clear the boxes and bars", async () => {
  const { c, transports, clock } = setup();
  await c.loadConfig();
  const starting = c.start();
  await flush();
  transports[0].resolve();
  await finished(starting);
  transports[0].options.onResult(result());
  assert.ok(c.overlay.last);
  clock.advance(1000);
  c.updateReadout();
  assert.ok(c.overlay.last);
  clock.advance(600);
  c.updateReadout();
  assert.equal(c.overlay.last, null);
  assert.equal(c.bars.face, null);
});

test("the mirror checkbox mirrors the video and the overlay", (t) => {
  const { c, ui } = setup();
  ui.mirror.checked = true;
  c.init(null);
  t.after(() => c.dispose());
  assert.equal(ui.video.classList.contains("mirrored"), true);
  assert.equal(c.overlay.mirror, true);
  ui.mirror.checked = false;
  ui.mirror.dispatch("change");
  assert.equal(ui.video.classList.contains("mirrored"), false);
  assert.equal(c.overlay.mirror, false);
});

test("an uncertain face is not announced; the last confident label stays", async () => {
  const { c, ui, transports, clock } = setup();
  await c.loadConfig();
  const starting = c.start();
  await flush();
  transports[0].resolve();
  await finished(starting);
  const send = (label, uncertain) => {
    const msg = result(label);
    msg.faces[0].uncertain = uncertain;
    transports[0].options.onResult(msg);
  };
  send("happy", false);
  assert.equal(ui.announce.textContent, "Expression: happy");
  clock.advance(5000);
  send("sad", true);
  assert.equal(ui.announce.textContent, "Expression: happy");
  assert.equal(c.app.lastResult.faces[0].uncertain, true);
  clock.advance(5000);
  send("sad", false);
  assert.equal(ui.announce.textContent, "Expression: sad");
});

test("a click on a face makes the bars follow it; a second click goes back to the largest", async (t) => {
  const { c, ui, transports } = setup();
  c.init(null);
  t.after(() => c.dispose()); // the readout ticker would keep Node alive
  await c.loadConfig();
  const starting = c.start();
  await flush();
  transports[0].resolve();
  await finished(starting);
  const big = { id: 1, box: [10, 10, 200, 200], label: "happy", score: 0.9, scores: { happy: 0.9 } };
  const small = { id: 2, box: [300, 10, 50, 50], label: "sad", score: 0.8, scores: { sad: 0.8 } };
  transports[0].options.onResult(result("happy", { faces: [big, small] }));
  assert.equal(c.bars.face, big); // the largest by default
  c.overlay.hit = small;
  ui.overlay.dispatch("click", { clientX: 330, clientY: 50 });
  assert.deepEqual(c.overlay.at, [320, 30]); // page coordinates -> the canvas's own
  assert.equal(c.overlay.selected, 2);
  assert.equal(c.bars.face, small); // at once, with the last result
  transports[0].options.onResult(result("happy", { faces: [big, { ...small, label: "fear" }] }));
  assert.equal(c.bars.face.id, 2); // and in the next results
  assert.equal(c.preferredFaceId(), 2); // the timeline plots it too
  ui.overlay.dispatch("click", { clientX: 330, clientY: 50 }); // the same face again
  assert.equal(c.overlay.selected, null);
  assert.equal(c.bars.face, big);
  c.overlay.hit = small;
  ui.overlay.dispatch("click", { clientX: 330, clientY: 50 });
  transports[0].options.onResult(result("happy", { faces: [big] })); // the face left
  assert.equal(c.bars.face, big);
  c.stop();
  assert.equal(c.app.selectedFace, null);
  assert.equal(c.overlay.selected, null);
});

test("the keyboard focus moves from Start to Stop and back", async (t) => {
  const { c, ui, transports } = setup();
  const doc = { activeElement: null };
  for (const name of ["start", "stop"]) {
    ui[name].ownerDocument = doc;
    ui[name].focus = () => { doc.activeElement = ui[name]; };
  }
  c.init(null);
  t.after(() => c.dispose());
  await c.loadConfig();
  ui.start.focus();
  const starting = c.start();
  assert.equal(doc.activeElement, ui.stop); // Start was disabled under the user's focus
  await flush();
  transports[0].resolve();
  await finished(starting);
  c.stop();
  assert.equal(doc.activeElement, ui.start);
});
