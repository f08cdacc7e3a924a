// Screen-reader announcements of the largest face's expression through a polite live region.
// Results arrive ~15 times a second; announcing each would drown the user, so a change of label
// is announced at most once per interval (the throttle is pure: time is passed in).

/** Minimum time between two announcements. */
export const ANNOUNCE_INTERVAL_MS = 2000;

/** Decides when a label is worth announcing: it changed, and the last announcement is old. */
export class AnnounceThrottle {
  constructor(minIntervalMs = ANNOUNCE_INTERVAL_MS) {
    this.minIntervalMs = minIntervalMs;
    this.reset();
  }

  reset() {
    this.lastLabel = null;
    this.lastAt = -Infinity;
  }

  /**
   * The label to announce now, or null. `label` null/empty (no face) announces nothing and keeps
   * the last label, so a face that comes back with the same expression is not repeated.
   */
  next(label, now) {
    if (!label || label === this.lastLabel || now - this.lastAt < this.minIntervalMs) return null;
    this.lastLabel = label;
    this.lastAt = now;
    return label;
  }
}

/** The sentence read out for `label`. */
export function announcementText(label) {
  return `Expression: ${label}`;
}

/** Writes throttled announcements into `el` (an aria-live="polite" element). */
export class LiveAnnouncer {
  constructor(el, throttle = new AnnounceThrottle()) {
    this.el = el;
    this.throttle = throttle;
  }

  /** The largest face's label now (null when there is no face). */
  update(label, now) {
    const say = this.throttle.next(label, now);
    if (say !== null && this.el) this.el.textContent = announcementText(say);
    return say;
  }

  /** Session over: forget the last label and empty the region (emptying is not announced). */
  clear() {
    this.throttle.reset();
    if (this.el) this.el.textContent = "";
  }
}
