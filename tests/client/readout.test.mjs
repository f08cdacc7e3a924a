// Result rate, stale detection and readout texts (client/readout.js).
import { test } from "node:test";
import assert from "node:assert/strict";

import { FPS_WINDOW_MS, RateMeter, readoutTexts, transportLabel } from "../../client/readout.js";

test("no results: rate 0, not started, never stale", () => {
  const m = new RateMeter();
  assert.equal(m.rate(10_000), 0);
  assert.equal(m.started, false);
  assert.equal(m.isStale(1e9), false);
});

test("under 250 ms of history the rate is not shown yet", () => {
  const m = new RateMeter();
  m.add(1000);
  m.add(1100);
  assert.equal(m.started, true);
  assert.equal(m.rate(1200), 0);
});

test("a steady 10 results/s reads 10 once the window is full", () => {
  const m = new RateMeter();
  for (let t = 1000; t <= 5000; t += 100) m.add(t);
  // Window 3000..5000 (inclusive ends) holds 21 arrivals over 2000 ms.
  assert.equal(m.rate(5000), 21 * 1000 / FPS_WINDOW_MS);
  // The old arrivals were dropped from the window.
  assert.equal(m.arrivals.length, 21);
});

test("a short history is divided by its own span, not the window", () => {
  const m = new RateMeter();
  for (let t = 0; t < 500; t += 50) m.add(1000 + t); // 10 results in 450 ms
  assert.equal(m.rate(1500), 10 * 1000 / 500);
});

test("results stop: the rate decays to 0 and the meter turns stale", () => {
  const m = new RateMeter();
  for (let t = 1000; t <= 3000; t += 100) m.add(t);
  assert.equal(m.isStale(4000), false);
  assert.equal(m.isStale(4501), true);
  assert.equal(m.rate(3000 + FPS_WINDOW_MS + 1), 0);
});

test("reset forgets everything", () => {
  const m = new RateMeter();
  m.add(1);
  m.reset();
  assert.equal(m.started, false);
  assert.deepEqual(m.arrivals, []);
});

test("transport labels", () => {
  assert.equal(transportLabel(null, false), "–");
  assert.equal(transportLabel("webrtc", true), "WebRTC");
  assert.equal(transportLabel("ws", false), "WebSocket");
  assert.equal(transportLabel("ws", true), "WebSocket (fallback)");
});

test("readout texts while running", () => {
  const t = readoutTexts({
    live: true, transport: "webrtc", fallback: false, started: true, rate: 14.96,
    lastResult: { latency_ms: 12.345, faces: [{}, {}] }, rtt: { ms: 33.6, kind: "data-channel ping" },
  });
  assert.deepEqual(t, {
    transport: "WebRTC", fps: "15.0 results/s", latency: "12.3 ms",
    rtt: "34 ms (data-channel ping)", faces: "2",
  });
});

test("readout texts when not running show dashes (except the transport)", () => {
  const t = readoutTexts({
    live: false, transport: "ws", fallback: true, started: true, rate: 10,
    lastResult: { latency_ms: 5, faces: [] }, rtt: { ms: 1, kind: "x" },
  });
  assert.deepEqual(t, { transport: "WebSocket (fallback)", fps: "–", latency: "–", rtt: "–", faces: "–" });
  const early = readoutTexts({ live: true, transport: "ws", fallback: false, started: false, rate: 0,
                               lastResult: null, rtt: null });
  assert.equal(early.fps, "–");
  assert.equal(early.faces, "–");
  assert.equal(early.latency, "–");
});
