// WebRTC transport: the camera track goes to the server, result messages come back on a data
// channel created before the offer. `start(timeoutMs)` resolves as soon as the connection is
// 'connected' or the first result arrives, and rejects (TransportError) otherwise; a rejection
// that is not `fatal` means "try the WebSocket fallback".

import { TransportError, httpError, withToken } from "./net.js";
import { PONG, parseMessage, pingMessage } from "./protocol.js";

/** What the page says when the server does not answer at all (stopped, or a wrong address). */
export const SERVER_UNREACHABLE = "Cannot reach the server: check that it is still running and "
  + "that this page's address is right, then click Start again.";

function waitIceGathering(pc, timeoutMs) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

export class RtcTransport {
  /**
   * @param {object} o
   * @param {MediaStream} o.stream camera stream
   * @param {RTCIceServer[]} o.iceServers
   * @param {string} [o.token] access token for /offer
   * @param {(msg: object) => void} o.onResult every valid result message (see protocol.js)
   * @param {(reason: string) => void} o.onLost connection lost after it was up
   * @param {(ms: number) => void} [o.onRtt] data-channel round trip
   * @param {(text: string) => void} [o.onServerError] `{"type":"error"}` messages
   */
  constructor(o) {
    this.name = "webrtc";
    this.o = o;
    this.pc = null;
    this.dc = null;
    this.session = null;
    this.ready = false;
    this.closed = false;
    this._abort = typeof AbortController !== "undefined" ? new AbortController() : null;
    this._timers = new Set();
    this._pingSentAt = 0;
  }

  _setTimeout(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  _clearTimer(t) {
    if (t) {
      clearTimeout(t);
      this._timers.delete(t);
    }
  }

  start(timeoutMs = 5000) {
    if (typeof RTCPeerConnection === "undefined") {
      return Promise.reject(new TransportError("This browser has no WebRTC"));
    }
    return new Promise((resolve, reject) => {
      let settled = false;
      this._resolveReady = () => {
        if (settled) return;
        settled = true;
        this._clearTimer(timer);
        resolve();
      };
      this._rejectReady = (err) => {
        if (settled) return;
        settled = true;
        this._clearTimer(timer);
        this.close();
        reject(err);
      };
      const timer = this._setTimeout(() => {
        this._rejectReady(new TransportError(
          `WebRTC did not connect within ${Math.round(timeoutMs / 100) / 10} s`, { timeout: true }));
      }, timeoutMs);
      this._negotiate().catch((err) => {
        if (err && err.name === "AbortError") err = new TransportError("WebRTC start cancelled");
        else if (!(err instanceof TransportError)) {
          err = new TransportError(`WebRTC setup failed: ${err && err.message ? err.message : err}`);
        }
        this._rejectReady(err);
      });
    });
  }

  _markReady() {
    if (this.closed) return;
    if (!this.ready) {
      this.ready = true;
      this._startPings();
    }
    if (this._resolveReady) this._resolveReady();
  }

  _lost(reason) {
    if (this.closed) return;
    if (!this.ready) {
      if (this._rejectReady) this._rejectReady(new TransportError(reason));
      return;
    }
    this.close();
    this.o.onLost(reason);
  }

  async _negotiate() {
    const pc = new RTCPeerConnection({ iceServers: this.o.iceServers || [] });
    this.pc = pc;
    for (const track of this.o.stream.getVideoTracks()) pc.addTrack(track, this.o.stream);

    // The data channel must exist before the offer so that it is part of the SDP.
    const dc = pc.createDataChannel("results");
    this.dc = dc;
    dc.onmessage = (e) => this._onMessage(e.data);
    dc.onopen = () => this._sendPing();
    dc.onclose = () => this._lost("Connection lost: the result channel closed");

    let disconnectTimer = null;
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === "connected") {
        this._clearTimer(disconnectTimer);
        disconnectTimer = null;
        this._markReady();
      } else if (s === "disconnected") {
        // Often recovers by itself; give it a few seconds.
        if (!disconnectTimer) {
          disconnectTimer = this._setTimeout(() => {
            disconnectTimer = null;
            if (pc.connectionState === "disconnected") this._lost("Connection lost (WebRTC disconnected)");
          }, 5000);
        }
      } else if (s === "failed") {
        this._lost("Connection lost (WebRTC failed)");
      } else if (s === "closed") {
        this._lost("Connection lost (WebRTC closed)");
      }
    };

    await pc.setLocalDescription(await pc.createOffer());
    // Wait for ICE gathering (bounded: a missing STUN server must not block us).
    await waitIceGathering(pc, this.o.iceGatherTimeoutMs ?? 2000);
    if (this.closed) throw new TransportError("WebRTC start cancelled");

    let resp;
    try {
      resp = await fetch(withToken("/offer", this.o.token), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
        signal: this._abort ? this._abort.signal : undefined,
        cache: "no-store",
      });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      // No HTTP answer at all: the WebSocket would not reach it either, so no fallback.
      throw new TransportError(SERVER_UNREACHABLE, { fatal: true });
    }
    if (!resp.ok) throw await httpError(resp, "POST /offer");
    const answer = await resp.json();
    if (!answer || typeof answer.sdp !== "string") throw new TransportError("Malformed answer from /offer");
    this.session = answer.session || null;
    if (this.closed) throw new TransportError("WebRTC start cancelled");
    await pc.setRemoteDescription({ type: answer.type || "answer", sdp: answer.sdp });
  }

  _onMessage(data) {
    if (this.closed) return;
    const msg = parseMessage(data);
    if (!msg) return; // not JSON, or a malformed result
    switch (msg.type) {
      case "result":
        this._markReady();
        this.o.onResult(msg);
        break;
      case "ping":
        this._send(PONG);
        break;
      case "pong":
        if (this._pingSentAt) {
          const ms = performance.now() - this._pingSentAt;
          this._pingSentAt = 0;
          if (this.o.onRtt) this.o.onRtt(ms);
        }
        break;
      case "error":
        if (this.o.onServerError && msg.error !== null) this.o.onServerError(msg.error);
        break;
      default:
        break; // unknown message types are ignored
    }
  }

  _send(obj) {
    const dc = this.dc;
    if (dc && dc.readyState === "open" && dc.bufferedAmount < 65536) {
      try {
        dc.send(JSON.stringify(obj));
        return true;
      } catch (_) { /* closing */ }
    }
    return false;
  }

  _sendPing() {
    if (this.closed || this._pingSentAt) return;
    if (this._send(pingMessage())) this._pingSentAt = performance.now();
  }

  _startPings() {
    if (this._pingTimer) return;
    this._pingTimer = setInterval(() => {
      // A ping unanswered for 4 s is forgotten so a lost pong does not stop measuring.
      if (this._pingSentAt && performance.now() - this._pingSentAt > 4000) this._pingSentAt = 0;
      this._sendPing();
    }, 2000);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    // A start() still waiting settles now (its timeout is cleared below).
    if (this._rejectReady) this._rejectReady(new TransportError("WebRTC start cancelled"));
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    if (this._pingTimer) clearInterval(this._pingTimer);
    if (this._abort) this._abort.abort();
    if (this.dc) {
      this.dc.onmessage = this.dc.onclose = this.dc.onopen = null;
      try { this.dc.close(); } catch (_) { /* ignore */ }
    }
    if (this.pc) {
      this.pc.onconnectionstatechange = null;
      // Stop only our senders; the camera tracks belong to the page.
      try { this.pc.close(); } catch (_) { /* ignore */ }
    }
  }
}
