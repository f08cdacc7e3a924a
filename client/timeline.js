// Live session timeline: polls GET /api/sessions/{id}/timeline.json while a session runs and
// draws, for one face id, one line per class over the last WINDOW_S seconds on a <canvas>
// (no libraries). Also the "Download CSV" / "Download JSON" buttons of the live session.
// State for tests: `stateObj` (window.facedapps.timeline): {points, faceIds, face, polls, ...}.

import { LABELS, colorFor } from "./labels.js";
import { httpStatusText, withToken } from "./net.js";

export const WINDOW_S = 60;
export const POLL_MS = 2000;
const AUTO = "auto";
const PAD = { left: 34, right: 8, top: 8, bottom: 18 };
const GRID = [0, 0.25, 0.5, 0.75, 1];

/** `/api/sessions/<session>/timeline.<fmt>` with the access token, if any. */
export function timelineUrl(session, fmt, token) {
  return withToken(`/api/sessions/${encodeURIComponent(session)}/timeline.${fmt}`, token);
}

/** A file-name-safe session id. */
/**
 * The server's timeline CSV (`face_id,second,n,<labels>`, one row per face and second, faces
 * and seconds in order, 4 decimals) built from a timeline.json object: what the page still
 * holds after the session ended and the server forgot it.
 */
export function timelineCsv(data) {
  const labels = (data && Array.isArray(data.labels)) ? data.labels : [];
  const lines = [["face_id", "second", "n", ...labels].join(",")];
  const faces = (data && data.faces) || {};
  for (const id of Object.keys(faces).sort((a, b) => Number(a) - Number(b))) {
    const rows = [...faces[id]].sort((a, b) => a.t - b.t);
    for (const r of rows) {
      const probs = (r.probs || []).map((v) => Number(v).toFixed(4));
      lines.push([id, r.t, r.n, ...probs].join(","));
    }
  }
  return lines.join("\n") + "\n";
}

function safeName(session) {
  return String(session).replace(/[^A-Za-z0-9_.-]/g, "_");
}

/** Save `blob` as `filename` through a temporary download anchor. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  a.hidden = true;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** `m:ss` of `t` seconds. */
function clock(t) {
  const m = Math.floor(t / 60);
  const s = Math.floor(t % 60);
  return `${m}:${String(s).padStart(2, "0")}`;
}

export class Timeline {
  /**
   * @param {object} els  {canvas, select, csv, json, note, legend}: the page's elements.
   * @param {object} opts {token: () => string, preferredId: () => number|null, state: object}
   */
  constructor(els, opts) {
    this.els = els;
    this.token = opts.token || (() => "");
    this.preferredId = opts.preferredId || (() => null);
    this.state = opts.state || {};
    this.session = null;
    this.data = null; // last timeline.json
    this.ended = null; // the session that ended last (its data stays downloadable)
    this.gen = 0; // incremented on every start/stop; replies of older runs are ignored
    this.timer = null;
    this.abort = null;
    this.downloading = false;
    this.resetState();
    this.buildLegend();
    els.select.addEventListener("change", () => this.draw());
    els.csv.addEventListener("click", () => this.download("csv"));
    els.json.addEventListener("click", () => this.download("json"));
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(() => this.draw()).observe(els.canvas);
    } else {
      window.addEventListener("resize", () => this.draw());
    }
    this.updateButtons();
    this.draw();
  }

  resetState() {
    Object.assign(this.state, {
      points: 0, faceIds: [], face: null, polls: 0, inFlight: false, polling: false,
      error: null, session: null,
    });
  }

  buildLegend() {
    const legend = this.els.legend;
    if (!legend) return;
    legend.textContent = "";
    for (const label of LABELS) {
      const item = document.createElement("span");
      item.className = "legend-item";
      const swatch = document.createElement("i");
      swatch.style.background = colorFor(label);
      item.append(swatch, document.createTextNode(label));
      legend.appendChild(item);
    }
  }

  // ------------------------------------------------------------ session lifecycle

  /** A session is live: clear the chart, poll now and every POLL_MS. */
  start(session) {
    this.stop();
    if (!session) return;
    this.session = session;
    this.data = null;
    this.resetState();
    this.state.session = session;
    this.state.polling = true;
    this.setNote("");
    this.updateFaceSelect([]);
    this.updateButtons();
    this.draw();
    this.poll(this.gen);
  }

  /** The session ended (Stop, error, page hidden): stop polling; the last chart stays. */
  stop() {
    this.gen += 1;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.abort) this.abort.abort();
    this.abort = null;
    if (this.session) this.ended = this.session; // its last poll (this.data) stays downloadable
    this.session = null;
    this.state.session = null;
    this.state.polling = false;
    this.state.inFlight = false;
    this.updateButtons();
  }

  schedule(gen) {
    if (gen !== this.gen) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.poll(gen), POLL_MS);
  }

  async poll(gen) {
    // One request at a time: the next poll is scheduled only once this one is settled.
    if (gen !== this.gen || this.state.inFlight || !this.session) return;
    const ctrl = new AbortController();
    this.abort = ctrl;
    this.state.inFlight = true;
    let again = true;
    try {
      const resp = await fetch(timelineUrl(this.session, "json", this.token()),
                               { cache: "no-store", signal: ctrl.signal });
      if (gen !== this.gen) return;
      if (!resp.ok) {
        const text = await httpStatusText(resp);
        if (gen !== this.gen) return;
        this.state.error = text;
        this.setNote(`Timeline unavailable (${text})`);
        // The session is gone or we may not read it: polling again will not help.
        if (resp.status === 404 || resp.status === 401 || resp.status === 403) again = false;
        return;
      }
      const data = await resp.json();
      if (gen !== this.gen) return;
      this.state.polls += 1;
      this.state.error = null;
      this.setNote("");
      this.data = data;
      this.draw();
    } catch (err) {
      if (gen !== this.gen || (err && err.name === "AbortError")) return;
      this.state.error = String(err && err.message ? err.message : err);
      this.setNote("Timeline: request failed; retrying");
    } finally {
      if (gen === this.gen) {
        this.state.inFlight = false;
        this.abort = null;
        if (again) this.schedule(gen);
        else this.state.polling = false;
      }
    }
  }

  // ------------------------------------------------------------ downloads

  updateButtons() {
    const off = (!this.session && !(this.ended && this.data)) || this.downloading;
    this.els.csv.disabled = off;
    this.els.json.disabled = off;
  }

  async download(fmt) {
    const session = this.session;
    if (!session && this.ended && this.data) { // ended: the server forgot it, the page has it
      const text = fmt === "csv" ? timelineCsv(this.data) : JSON.stringify(this.data);
      const type = fmt === "csv" ? "text/csv" : "application/json";
      saveBlob(new Blob([text], { type }), `timeline-${safeName(this.ended)}.${fmt}`);
      this.setNote("Saved from the page: the session has ended (its last two seconds or so may be missing).");
      return;
    }
    if (!session || this.downloading) return;
    this.downloading = true;
    this.updateButtons();
    try {
      const resp = await fetch(timelineUrl(session, fmt, this.token()), { cache: "no-store" });
      if (!resp.ok) throw new Error(await httpStatusText(resp));
      const text = await resp.text();
      const type = fmt === "csv" ? "text/csv" : "application/json";
      saveBlob(new Blob([text], { type }), `timeline-${safeName(session)}.${fmt}`);
      this.setNote("");
    } catch (err) {
      this.setNote(`Download failed: ${err && err.message ? err.message : err}`);
    } finally {
      this.downloading = false;
      this.updateButtons();
    }
  }

  setNote(text) {
    if (!this.els.note) return;
    this.els.note.textContent = text;
    this.els.note.hidden = !text;
  }

  // ------------------------------------------------------------ faces

  updateFaceSelect(ids) {
    const sel = this.els.select;
    const want = [AUTO, ...ids.map(String)];
    const have = Array.from(sel.options, (o) => o.value);
    if (want.length === have.length && want.every((v, i) => v === have[i])) return;
    const chosen = sel.value;
    sel.textContent = "";
    for (const v of want) {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = v === AUTO ? "Largest face" : `Face ${v}`;
      sel.appendChild(o);
    }
    // A chosen face that left: back to the largest face.
    sel.value = want.includes(chosen) ? chosen : AUTO;
  }

  /** The face id to plot: the chosen one, else the largest face now, else the latest seen. */
  pickFace(faces) {
    const ids = Object.keys(faces);
    if (!ids.length) return null;
    const chosen = this.els.select.value;
    if (chosen && chosen !== AUTO && faces[chosen]) return chosen;
    const pref = this.preferredId();
    if (pref !== null && pref !== undefined && faces[String(pref)]) return String(pref);
    let best = null;
    let bestKey = null;
    for (const id of ids) {
      const recs = faces[id];
      const last = recs.length ? recs[recs.length - 1].t : -1;
      const key = [last, recs.length];
      if (!best || key[0] > bestKey[0] || (key[0] === bestKey[0] && key[1] > bestKey[1])) {
        best = id;
        bestKey = key;
      }
    }
    return best;
  }

  // ------------------------------------------------------------ drawing

  draw() {
    const canvas = this.els.canvas;
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 600;
    const cssH = canvas.clientHeight || 150;
    const w = Math.round(cssW * dpr);
    const h = Math.round(cssH * dpr);
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);

    const x0 = PAD.left;
    const x1 = cssW - PAD.right;
    const y0 = PAD.top;
    const y1 = cssH - PAD.bottom;
    const yOf = (p) => y1 - Math.max(0, Math.min(1, p)) * (y1 - y0);

    // Grid and axes.
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = "rgba(255,255,255,0.08)";
    ctx.fillStyle = "#9aa0a6";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const g of GRID) {
      const y = Math.round(yOf(g)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x0, y);
      ctx.lineTo(x1, y);
      ctx.stroke();
      if (g === 0 || g === 0.5 || g === 1) ctx.fillText(`${Math.round(g * 100)}%`, x0 - 4, y);
    }
    const data = this.data;
    const faces = data && data.faces && typeof data.faces === "object" ? data.faces : {};
    const ids = Object.keys(faces).filter((id) => Array.isArray(faces[id]) && faces[id].length)
      .sort((a, b) => Number(a) - Number(b) || a.localeCompare(b));
    this.updateFaceSelect(ids);
    this.state.faceIds = ids.map((id) => (/^\d+$/.test(id) ? Number(id) : id));
    const face = this.pickFace(Object.fromEntries(ids.map((id) => [id, faces[id]])));
    this.state.face = face === null ? null : (/^\d+$/.test(face) ? Number(face) : face);
    if (face === null) {
      this.state.points = 0;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(this.session ? "Waiting for faces…" : "No timeline yet",
                   (x0 + x1) / 2, (y0 + y1) / 2);
      return;
    }

    // Time axis (seconds since the session's start): the first WINDOW_S seconds fill it from
    // the left, then it scrolls, showing the last WINDOW_S up to the newest second of any face.
    let tEnd = 0;
    for (const id of ids) tEnd = Math.max(tEnd, faces[id][faces[id].length - 1].t);
    const tStart = Math.max(0, tEnd - (WINDOW_S - 1));
    const xOf = (t) => x0 + ((t - tStart) / (WINDOW_S - 1)) * (x1 - x0);
    ctx.lineWidth = 1;
    ctx.strokeStyle = "rgba(255,255,255,0.08)";
    ctx.fillStyle = "#9aa0a6";
    ctx.textBaseline = "top";
    for (let t = Math.ceil(tStart / 10) * 10; t <= tStart + WINDOW_S - 1; t += 10) {
      const x = Math.round(xOf(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, y0);
      ctx.lineTo(x, y1);
      ctx.stroke();
      ctx.textAlign = x - 14 < x0 ? "left" : x + 14 > cssW ? "right" : "center";
      ctx.fillText(clock(t), x, y1 + 3);
    }
    const recs = faces[face].filter((r) => r && Number.isFinite(r.t) && r.t >= tStart
                                      && Array.isArray(r.probs));
    this.state.points = recs.length;

    const labels = Array.isArray(data.labels) ? data.labels : LABELS;
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    for (let k = 0; k < labels.length; k++) {
      const color = colorFor(labels[k]);
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.beginPath();
      let prevT = null;
      for (const r of recs) {
        const x = xOf(r.t);
        const y = yOf(Number(r.probs[k]) || 0);
        // A gap of more than one second (the face was not seen): break the line.
        if (prevT === null || r.t - prevT > 1) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
        prevT = r.t;
      }
      ctx.stroke();
      // Lone seconds (no neighbour to join) are drawn as dots.
      for (let i = 0; i < recs.length; i++) {
        const r = recs[i];
        const joinedPrev = i > 0 && r.t - recs[i - 1].t <= 1;
        const joinedNext = i + 1 < recs.length && recs[i + 1].t - r.t <= 1;
        if (!joinedPrev && !joinedNext) {
          ctx.beginPath();
          ctx.arc(xOf(r.t), yOf(Number(r.probs[k]) || 0), 2.5, 0, Math.PI * 2);
          ctx.fill();
        }
      }
    }
  }
}
