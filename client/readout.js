// The "Stream" readout: result rate over a sliding window, and the text of each readout line.
// Pure (times are passed in) so it can be unit-tested without a page.

/** Results are counted over this window for the rate. */
export const FPS_WINDOW_MS = 2000;
/** No result for this long: the boxes and bars on screen are stale and get cleared. */
export const STALE_MS = 1500;
/** Below this much history the rate is too noisy to show. */
const MIN_SPAN_MS = 250;

/** Result arrivals, for the rate and the stale check. Times are in ms (performance.now()). */
export class RateMeter {
  constructor(windowMs = FPS_WINDOW_MS) {
    this.windowMs = windowMs;
    this.reset();
  }

  reset() {
    this.arrivals = [];
    this.first = null;
    this.last = null;
  }

  /** Whether any result arrived since the last reset. */
  get started() {
    return this.first !== null;
  }

  add(now) {
    if (this.first === null) this.first = now;
    this.last = now;
    this.arrivals.push(now);
  }

  /** Results per second over the last window (0 until there is enough history). */
  rate(now) {
    while (this.arrivals.length && now - this.arrivals[0] > this.windowMs) this.arrivals.shift();
    if (this.first === null) return 0;
    const span = Math.min(this.windowMs, now - this.first);
    return span > MIN_SPAN_MS ? (this.arrivals.length * 1000) / span : 0;
  }

  /** True once results have come and then stopped for more than `staleMs`. */
  isStale(now, staleMs = STALE_MS) {
    return this.last !== null && now - this.last > staleMs;
  }
}

/** The transport as shown to people. */
export function transportLabel(transport, fallback) {
  if (!transport) return "–";
  if (transport === "webrtc") return "WebRTC";
  return fallback ? "WebSocket (fallback)" : "WebSocket";
}

/**
 * The readout lines. `live`: the page is running; `rate`: results/s; `started`: a result has
 * arrived; `rtt`: {ms, kind} or null. Lines other than the transport show "–" when not live.
 */
export function readoutTexts({ live, transport, fallback, lastResult, rate, started, rtt }) {
  const last = lastResult;
  return {
    transport: transportLabel(transport, fallback),
    fps: live && started ? `${rate.toFixed(1)} results/s` : "–",
    latency: live && last && Number.isFinite(last.latency_ms) ? `${last.latency_ms.toFixed(1)} ms` : "–",
    rtt: live && rtt ? `${rtt.ms.toFixed(0)} ms (${rtt.kind})` : "–",
    faces: live && last && Array.isArray(last.faces) ? String(last.faces.length) : "–",
  };
}
