// Seven class bars for the largest face's `scores`; greyed out when there is no face.

import { LABELS, colorFor } from "./labels.js";

export class Bars {
  constructor(container) {
    this.container = container;
    this.rows = {};
    container.textContent = "";
    for (const label of LABELS) {
      const row = document.createElement("div");
      row.className = "bar-row";
      row.dataset.label = label;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = label;
      const track = document.createElement("div");
      track.className = "track";
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.background = colorFor(label);
      track.appendChild(fill);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = "–";
      row.append(name, track, pct);
      container.appendChild(row);
      this.rows[label] = { row, fill, pct };
    }
    this.clear();
  }

  clear() {
    this.container.classList.add("empty");
    for (const label of LABELS) {
      const r = this.rows[label];
      r.fill.style.width = "0%";
      r.pct.textContent = "–";
      r.row.classList.remove("top");
    }
  }

  /** Show `face.scores` ({label: prob}); `face` null/undefined clears. */
  show(face) {
    if (!face || !face.scores || typeof face.scores !== "object") {
      this.clear();
      return;
    }
    this.container.classList.remove("empty");
    let best = null;
    for (const label of LABELS) {
      const p = Number(face.scores[label]);
      const v = Number.isFinite(p) ? Math.min(1, Math.max(0, p)) : 0;
      const r = this.rows[label];
      r.fill.style.width = `${(v * 100).toFixed(1)}%`;
      r.pct.textContent = `${Math.round(v * 100)}%`;
      if (best === null || v > Number(face.scores[best] || 0)) best = label;
    }
    const top = face.label in this.rows ? face.label : best;
    for (const label of LABELS) this.rows[label].row.classList.toggle("top", label === top);
  }
}

/** The face with the largest box area, or null. */
export function largestFace(faces) {
  let best = null;
  let bestArea = -1;
  for (const f of faces || []) {
    const b = f && f.box;
    const area = Array.isArray(b) && b.length === 4 ? Math.abs(b[2] * b[3]) : 0;
    if (area > bestArea) {
      best = f;
      bestArea = area;
    }
  }
  return best;
}
