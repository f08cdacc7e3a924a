// Draws face boxes and labels on a canvas laid exactly over the <video> (live camera) or an
// <img> (an analysed photo: analyzer.js).
//
// Boxes arrive in pixels of the frame the server processed (message width/height); they are
// mapped onto the part of the media element that shows the picture (object-fit: contain), and
// mirrored when the video is shown mirrored. The canvas backing store follows the displayed size
// times devicePixelRatio so lines and text stay sharp.

import { colorFor } from "./labels.js";

/** Box and label colour of an uncertain face: the label is shown muted, not hidden. */
export const MUTED = "#9aa0a6";

/**
 * The text drawn over a face and whether it is muted: "happy 91%  #3", or for a face the
 * server marks `uncertain` (filtered confidence below one half) "happy? 41%  #3", muted.
 */
export function faceLabel(face) {
  const muted = face.uncertain === true;
  const pct = Number.isFinite(face.score) ? ` ${Math.round(face.score * 100)}%` : "";
  const id = face.id !== undefined && face.id !== null ? `  #${face.id}` : "";
  return { text: `${face.label ?? "?"}${muted ? "?" : ""}${pct}${id}`, muted };
}

/** Intrinsic size of a <video> (videoWidth) or an <img> (naturalWidth); zeros when unknown. */
export function mediaSize(el) {
  if (!el) return [0, 0];
  return [el.videoWidth || el.naturalWidth || 0, el.videoHeight || el.naturalHeight || 0];
}

export class Overlay {
  /** `video`: the <video> or <img> the canvas lies over. */
  constructor(canvas, video) {
    this.canvas = canvas;
    this.video = video;
    this.ctx = canvas.getContext("2d");
    this.mirror = false;
    this.last = null;
    if (typeof ResizeObserver !== "undefined") {
      this._ro = new ResizeObserver(() => this.redraw());
      this._ro.observe(canvas);
    }
    window.addEventListener("resize", () => this.redraw());
  }

  setMirror(on) {
    this.mirror = !!on;
    this.redraw();
  }

  /** Fit the backing store to the displayed size; returns [cssWidth, cssHeight, dpr]. */
  _fit() {
    const dpr = window.devicePixelRatio || 1;
    const cw = this.canvas.clientWidth;
    const ch = this.canvas.clientHeight;
    const w = Math.max(1, Math.round(cw * dpr));
    const h = Math.max(1, Math.round(ch * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    return [cw, ch, dpr];
  }

  /** Rectangle (CSS pixels, canvas coordinates) where the video picture is shown. */
  _content(cw, ch, frameW, frameH) {
    const [mw, mh] = mediaSize(this.video);
    const vw = mw || frameW;
    const vh = mh || frameH;
    if (!vw || !vh) return { x: 0, y: 0, w: cw, h: ch };
    const s = Math.min(cw / vw, ch / vh);
    const w = vw * s;
    const h = vh * s;
    return { x: (cw - w) / 2, y: (ch - h) / 2, w, h };
  }

  clear() {
    this.last = null;
    this._fit();
    this.ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  redraw() {
    if (this.last) this.draw(this.last);
    else this.clear();
  }

  /** Draw one result message (faces with box/label/score/id). */
  draw(msg) {
    this.last = msg;
    const [cw, ch, dpr] = this._fit();
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const faces = (msg && Array.isArray(msg.faces)) ? msg.faces : [];
    const fw = Number(msg && msg.width) || mediaSize(this.video)[0];
    const fh = Number(msg && msg.height) || mediaSize(this.video)[1];
    if (!faces.length || !fw || !fh || !cw || !ch) return;

    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const area = this._content(cw, ch, fw, fh);
    const sx = area.w / fw;
    const sy = area.h / fh;
    const fontPx = Math.max(12, Math.round(Math.min(22, area.w / 32)));
    ctx.font = `600 ${fontPx}px system-ui, sans-serif`;
    ctx.textBaseline = "top";

    for (const face of faces) {
      if (!Array.isArray(face.box) || face.box.length !== 4) continue;
      let [bx, by, bw, bh] = face.box.map(Number);
      if (this.mirror) bx = fw - bx - bw;
      const x = area.x + bx * sx;
      const y = area.y + by * sy;
      const w = bw * sx;
      const h = bh * sy;
      const { text, muted } = faceLabel(face);
      const color = muted ? MUTED : colorFor(face.label);

      ctx.lineWidth = Math.max(2, fontPx / 6);
      ctx.strokeStyle = color;
      ctx.setLineDash(muted ? [6, 4] : []);
      ctx.strokeRect(x, y, w, h);
      ctx.setLineDash([]);

      const pad = 4;
      const tw = ctx.measureText(text).width + 2 * pad;
      const th = fontPx + 2 * pad;
      let ty = y - th;
      if (ty < area.y) ty = y; // no room above: draw inside the box
      const tx = Math.min(Math.max(x - ctx.lineWidth / 2, 0), Math.max(0, cw - tw));
      ctx.fillStyle = color;
      ctx.fillRect(tx, ty, tw, th);
      ctx.fillStyle = "#111";
      ctx.fillText(text, tx + pad, ty + pad);
    }
  }
}
