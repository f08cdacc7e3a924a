// Throttled screen-reader announcements (client/announce.js).
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  ANNOUNCE_INTERVAL_MS, AnnounceThrottle, LiveAnnouncer, announcementText,
} from "../../client/announce.js";

test("the first label is announced at once", () => {
  const t = new AnnounceThrottle();
  assert.equal(t.next("happy", 0), "happy");
});

test("the same label is never repeated", () => {
  const t = new AnnounceThrottle();
  t.next("happy", 0);
  assert.equal(t.next("happy", 100), null);
  assert.equal(t.next("happy", 60_000), null);
});

test("a change within the interval waits; it is announced once the interval is over", () => {
  const t = new AnnounceThrottle(2000);
  assert.equal(t.next("happy", 1000), "happy");
  assert.equal(t.next("sad", 1500), null);
  assert.equal(t.next("sad", 2999), null);
  assert.equal(t.next("sad", 3000), "sad");
  assert.equal(t.next("sad", 3100), null);
});

test("flicker within the interval produces no announcement; the label then shown wins", () => {
  const t = new AnnounceThrottle(2000);
  t.next("happy", 0);
  for (let ms = 100; ms < 2000; ms += 100) assert.equal(t.next(ms % 200 ? "sad" : "fear", ms), null);
  assert.equal(t.next("fear", 2000), "fear");
  // Back to the previously announced label after flicker: that is a change, announced later.
  assert.equal(t.next("happy", 2500), null);
  assert.equal(t.next("happy", 4000), "happy");
});

test("at most one announcement per interval over a long noisy run", () => {
  const t = new AnnounceThrottle(2000);
  const labels = ["happy", "sad", "fear", "neutral"];
  const said = [];
  for (let ms = 0; ms < 20_000; ms += 66) {
    const s = t.next(labels[Math.floor(ms / 150) % labels.length], ms);
    if (s) said.push(ms);
  }
  assert.ok(said.length >= 9 && said.length <= 10, String(said));
  for (let i = 1; i < said.length; i++) assert.ok(said[i] - said[i - 1] >= 2000);
});

test("no face announces nothing and keeps the last label", () => {
  const t = new AnnounceThrottle();
  t.next("happy", 0);
  assert.equal(t.next(null, 5000), null);
  assert.equal(t.next("", 5000), null);
  assert.equal(t.next("happy", 6000), null); // the same face back: not repeated
});

test("reset announces the current label again", () => {
  const t = new AnnounceThrottle();
  t.next("happy", 0);
  t.reset();
  assert.equal(t.next("happy", 10), "happy");
});

test("the default interval is about 2 s", () => {
  assert.equal(ANNOUNCE_INTERVAL_MS, 2000);
  assert.equal(new AnnounceThrottle().minIntervalMs, 2000);
});

test("LiveAnnouncer writes into the live region only when the throttle says so", () => {
  const el = { textContent: "" };
  const a = new LiveAnnouncer(el);
  assert.equal(a.update("happy", 0), "happy");
  assert.equal(el.textContent, announcementText("happy"));
  assert.equal(el.textContent, "Expression: happy");
  a.update("sad", 500);
  assert.equal(el.textContent, "Expression: happy");
  a.update("sad", 2500);
  assert.equal(el.textContent, "Expression: sad");
  a.clear();
  assert.equal(el.textContent, "");
  a.update("sad", 2600);
  assert.equal(el.textContent, "Expression: sad");
});
