// Seven class bars for the largest face's `scores`; greyed out when there is no face. Each bar
// is a meter (role="meter", 0-100 %) named by its class, so screen readers can read the values.

import { LABELS, colorFor } from "./labels.js";

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

/** The face whose `id` is `id` (one the user clicked), else the largest; null when none. */
export function chooseFace(faces, id) {
  if (id !== null && id !== undefined) {
    for (const f of faces || []) if (f && f.id === id) return f;
  }
  return largestFace(faces);
}

/**
 * What the bars show for `face`: null when there is nothing to show (no face or no scores),
 * else `{top, rows}` with one row per label in LABELS order: `value` (0-1, clamped), `pct`
 * (whole percent), `width` (CSS) and `text` ("happy 91%"). `top` is the face's label when it is
 * one of LABELS, else the highest score (first one on a tie).
 */
export function barValues(face) {
  if (!face || !face.scores || typeof face.scores !== "object") return null;
  let best = null;
  let bestValue = -1;
  const rows = LABELS.map((label) => {
    const p = Number(face.scores[label]);
    const value = Number.isFinite(p) ? Math.min(1, Math.max(0, p)) : 0;
    if (value > bestValue) {
      best = label;
      bestValue = value;
    }
    const pct = Math.round(value * 100);
    return { label, value, pct, width: `${(value * 100).toFixed(1)}%`, text: `${label} ${pct}%` };
  });
  return { top: LABELS.includes(face.label) ? face.label : best, rows };
}

export class Bars {
  constructor(container) {
    this.container = container;
    this.rows = {};
    container.textContent = "";
    container.setAttribute("role", "group");
    for (const label of LABELS) {
      const row = document.createElement("div");
      row.className = "bar-row";
      row.dataset.label = label;
      // The row is the meter; its children are presentational (the name is aria-label).
      row.setAttribute("role", "meter");
      row.setAttribute("aria-label", label);
      row.setAttribute("aria-valuemin", "0");
      row.setAttribute("aria-valuemax", "100");
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
      r.row.setAttribute("aria-valuenow", "0");
      r.row.setAttribute("aria-valuetext", `${label}: no face`);
    }
  }

  /** Show `face.scores` ({label: prob}); `face` null/undefined clears. */
  show(face) {
    const v = barValues(face);
    if (!v) {
      this.clear();
      return;
    }
    this.container.classList.remove("empty");
    for (const { label, pct, width, text } of v.rows) {
      const r = this.rows[label];
      r.fill.style.width = width;
      r.pct.textContent = `${pct}%`;
      r.row.classList.toggle("top", label === v.top);
      r.row.setAttribute("aria-valuenow", String(pct));
      r.row.setAttribute("aria-valuetext", text);
    }
  }
}
