// WebSocket fallback transport (/ws/stream): for networks where WebRTC cannot connect (e.g. an
// HTTP tunnel). The video is drawn into an offscreen canvas of at most 640x480, encoded as JPEG
// (quality 0.7) and sent as one binary message; only one frame is in flight: the next one goes
// when the previous frame's result arrives, or after a 1 s timeout.

import { TransportError, wsUrl } from "./net.js";
import { PONG, parseMessage } from "./protocol.js";

export class WsTransport {
  /**
   * @param {object} o
   * @param {HTMLVideoElement} o.video element playing the camera stream
   * @param {string} [o.token]
   * @param {(msg: object) => void} o.onResult
   * @param {(reason: string) => void} o.onLost
   * @param {(ms: number) => void} [o.onRtt] frame sent -> its result received
   * @param {(text: string) => void} [o.onServerError]
   */
  constructor(o) {
    this.name = "ws";
    this.o = o;
    this.maxWidth = o.maxWidth || 640;
    this.maxHeight = o.maxHeight || 480;
    this.quality = o.quality || 0.7;
    this.minIntervalMs = o.minIntervalMs ?? 1000 / 15;
    this.frameTimeoutMs = o.frameTimeoutMs || 1000;
    this.ws = null;
    this.session = null;
    this.ready = false;
    this.closed = false;
    this.canvas = document.createElement("canvas");
    this.ctx = this.canvas.getContext("2d");
    this.inFlight = false;
    this.sentAt = 0;
    this.lastSendAt = 0;
    this.framesSent = 0;
    this._pumpTimer = null;
    this._frameTimer = null;
    this._serverError = "";
    this._seq = 0;
  }

  start(timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.close();
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new TransportError("WebSocket did not open in time", { timeout: true })), timeoutMs);
      let ws;
      try {
        ws = new WebSocket(wsUrl("/ws/stream", this.o.token));
      } catch (err) {
        fail(new TransportError(`WebSocket failed: ${err.message || err}`));
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.ready = true;
        resolve();
        this._pump();
      };
      ws.onmessage = (e) => this._onMessage(e.data);
      ws.onerror = () => { /* a close event follows with the details */ };
      ws.onclose = (e) => {
        const detail = this._serverError || e.reason || "";
        if (!this.ready) {
          fail(new TransportError(
            `WebSocket connection to the server failed${detail ? `: ${detail}`
              : " (the server may be at capacity, or unreachable)"}`,
            { fatal: /capacity/i.test(detail) }));
          return;
        }
        if (this.closed) return;
        this.close();
        this.o.onLost(`Connection lost (WebSocket closed, code ${e.code}${detail ? `: ${detail}` : ""})`);
      };
    });
  }

  _onMessage(data) {
    if (this.closed) return;
    const msg = parseMessage(data);
    if (!msg) return; // not JSON, or a malformed result (the frame timeout moves on)
    if (msg.type === "result") {
      if (this.inFlight) {
        if (this.o.onRtt) this.o.onRtt(performance.now() - this.sentAt);
        this._frameDone();
      }
      this.o.onResult(msg);
    } else if (msg.type === "hello") {
      if (msg.session !== null) this.session = msg.session;
    } else if (msg.type === "ping") {
      this._sendText(PONG);
    } else if (msg.type === "error") {
      if (msg.error !== null) {
        this._serverError = msg.error;
        if (this.o.onServerError) this.o.onServerError(msg.error);
      }
      // An error answers the frame in flight too (e.g. an undecodable frame).
      if (this.inFlight) this._frameDone();
    }
    // Other message types are ignored.
  }

  _sendText(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      try { this.ws.send(JSON.stringify(obj)); } catch (_) { /* closing */ }
    }
  }

  _frameDone() {
    this.inFlight = false;
    clearTimeout(this._frameTimer);
    this._frameTimer = null;
    this._pump();
  }

  _schedule(ms) {
    if (this._pumpTimer || this.closed) return;
    this._pumpTimer = setTimeout(() => {
      this._pumpTimer = null;
      this._pump();
    }, Math.max(0, ms));
  }

  _pump() {
    if (this.closed || this.inFlight || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const now = performance.now();
    const wait = this.lastSendAt + this.minIntervalMs - now;
    if (wait > 0) {
      this._schedule(wait);
      return;
    }
    const v = this.o.video;
    if (!v || v.readyState < 2 || !v.videoWidth || !v.videoHeight) {
      this._schedule(100);
      return;
    }
    if (this.ws.bufferedAmount > 1 << 20) {
      this._schedule(100); // the socket is backed up; wait
      return;
    }
    const s = Math.min(1, this.maxWidth / v.videoWidth, this.maxHeight / v.videoHeight);
    const w = Math.max(1, Math.round(v.videoWidth * s));
    const h = Math.max(1, Math.round(v.videoHeight * s));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.ctx.drawImage(v, 0, 0, w, h);
    this.inFlight = true;
    this.lastSendAt = now;
    // The frame timeout starts now so that a stuck encoder cannot stall the loop either.
    this._frameTimer = setTimeout(() => {
      this._frameTimer = null;
      if (this.inFlight) {
        this.inFlight = false;
        this._pump();
      }
    }, this.frameTimeoutMs);
    const seq = ++this._seq;
    this.canvas.toBlob((blob) => {
      if (this.closed || !this.inFlight || seq !== this._seq) return;
      if (!blob || this.ws.readyState !== WebSocket.OPEN) {
        this._frameDone();
        return;
      }
      try {
        this.sentAt = performance.now();
        this.ws.send(blob);
        this.framesSent += 1;
      } catch (_) {
        this._frameDone();
      }
    }, "image/jpeg", this.quality);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._pumpTimer);
    clearTimeout(this._frameTimer);
    if (this.ws) {
      const ws = this.ws;
      ws.onmessage = ws.onopen = null;
      ws.onclose = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
        try { ws.close(1000, "client stop"); } catch (_) { /* ignore */ }
      }
    }
  }
}
