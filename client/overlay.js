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

/**
 * The face under a point (canvas CSS pixels) among drawn boxes `rects` ({face, x, y, w, h}):
 * the smallest box that holds it (a face inside a larger one stays reachable), else null.
 */
export function faceAtPoint(rects, px, py) {
  let best = null;
  for (const r of rects || []) {
    if (px >= r.x && px <= r.x + r.w && py >= r.y && py <= r.y + r.h
        && (!best || r.w * r.h < best.w * best.h)) best = r;
  }
  return best ? best.face : null;
}

/**
 * The label of a face drawn `boxH` CSS pixels tall among `count` faces, at `fontPx` at most:
 * `{text, px}`. In a crowd (more than 8 faces) a label is as tall as a third of its box (at
 * least 10 px) and, when that is still wider than about twice the box, it is shortened to the
 * label's first three letters and the id ("hap #3"), so labels do not bury their neighbours.
 */
export function fitLabel(face, boxW, boxH, count, fontPx, measure) {
  const { text } = faceLabel(face);
  if (count <= 8) return { text, px: fontPx };
  const px = Math.max(10, Math.min(fontPx, Math.round(boxH / 3)));
  if (measure(text, px) <= Math.max(2 * boxW, 48)) return { text, px };
  const id = face.id !== undefined && face.id !== null ? ` #${face.id}` : "";
  const short = `${String(face.label ?? "?").slice(0, 3)}${face.uncertain === true ? "?" : ""}${id}`;
  return { text: short, px };
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
    this.rects = []; // the boxes drawn last, in canvas CSS pixels (faceAt)
    this.selectedId = null; // a face the user picked: drawn with a white outline
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

  /** The face drawn under a point of the canvas (CSS pixels from its top left), or null. */
  faceAt(px, py) {
    return faceAtPoint(this.rects, px, py);
  }

  /** Mark the face with `id` as the picked one (null: none) and redraw. */
  select(id) {
    this.selectedId = id === undefined ? null : id;
    this.redraw();
  }

  clear() {
    this.last = null;
    this.rects = [];
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
    this.rects = [];
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
      const { muted } = faceLabel(face);
      const color = muted ? MUTED : colorFor(face.label);
      this.rects.push({ face, x, y, w, h });
      const { text, px } = fitLabel(face, w, h, faces.length, fontPx, (t, size) => {
        ctx.font = `600 ${size}px system-ui, sans-serif`;
        return ctx.measureText(t).width;
      });
      ctx.font = `600 ${px}px system-ui, sans-serif`;

      ctx.lineWidth = Math.max(2, px / 6);
      if (face.id !== undefined && face.id === this.selectedId) {
        ctx.strokeStyle = "#fff"; // the picked face: a white outline around its box
        ctx.strokeRect(x - ctx.lineWidth, y - ctx.lineWidth, w + 2 * ctx.lineWidth,
                       h + 2 * ctx.lineWidth);
      }
      ctx.strokeStyle = color;
      ctx.setLineDash(muted ? [6, 4] : []);
      ctx.strokeRect(x, y, w, h);
      ctx.setLineDash([]);

      const pad = px >= 12 ? 4 : 2;
      const tw = ctx.measureText(text).width + 2 * pad;
      const th = px + 2 * pad;
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
