// Largest face and the bar (meter) values (client/bars.js; the Bars class needs a DOM).
import { test } from "node:test";
import assert from "node:assert/strict";

import { barValues, largestFace } from "../../client/bars.js";
import { LABELS } from "../../client/labels.js";

test("largestFace picks the largest box area", () => {
  const a = { id: 1, box: [0, 0, 10, 10] };
  const b = { id: 2, box: [50, 50, 30, 20] };
  const c = { id: 3, box: [5, 5, 20, 20] };
  assert.equal(largestFace([a, b, c]), b);
  assert.equal(largestFace([c, a]), c);
});

test("largestFace: ties keep the first; bad boxes count as area 0", () => {
  const a = { id: 1, box: [0, 0, 10, 10] };
  const b = { id: 2, box: [9, 9, 10, 10] };
  assert.equal(largestFace([a, b]), a);
  const bad = { id: 3, box: [0, 0, 10] };
  assert.equal(largestFace([bad, a]), a);
  assert.equal(largestFace([bad]), bad); // still a face, with no area
  assert.equal(largestFace([]), null);
  assert.equal(largestFace(null), null);
  assert.equal(largestFace([null, a]), a);
});

test("barValues: nothing to show without a face or scores", () => {
  assert.equal(barValues(null), null);
  assert.equal(barValues(undefined), null);
  assert.equal(barValues({ label: "happy" }), null);
  assert.equal(barValues({ scores: "happy" }), null);
});

test("barValues: one row per label, in order, with percent and meter text", () => {
  const scores = { angry: 0.01, disgust: 0, fear: 0.02, happy: 0.914, sad: 0.03, surprise: 0.005, neutral: 0.021 };
  const v = barValues({ label: "happy", scores });
  assert.deepEqual(v.rows.map((r) => r.label), LABELS);
  const happy = v.rows[LABELS.indexOf("happy")];
  assert.deepEqual(happy, { label: "happy", value: 0.914, pct: 91, width: "91.4%", text: "happy 91%" });
  const surprise = v.rows[LABELS.indexOf("surprise")];
  assert.equal(surprise.pct, 1); // 0.5 % rounds up
  assert.equal(surprise.text, "surprise 1%");
  assert.equal(v.top, "happy");
});

test("barValues: values are clamped to 0-1 and missing ones are 0", () => {
  const v = barValues({ scores: { happy: 1.7, sad: -0.2, fear: "x" } });
  const by = Object.fromEntries(v.rows.map((r) => [r.label, r]));
  assert.equal(by.happy.value, 1);
  assert.equal(by.happy.width, "100.0%");
  assert.equal(by.happy.text, "happy 100%");
  assert.equal(by.sad.value, 0);
  assert.equal(by.fear.value, 0);
  assert.equal(by.neutral.pct, 0);
});

test("barValues: top is the face's label, else the highest score (first on a tie)", () => {
  // The smoothed label may differ from this frame's highest score: the label wins.
  assert.equal(barValues({ label: "sad", scores: { happy: 0.9, sad: 0.1 } }).top, "sad");
  assert.equal(barValues({ label: "unknown", scores: { happy: 0.2, sad: 0.7 } }).top, "sad");
  assert.equal(barValues({ scores: { fear: 0.5, happy: 0.5 } }).top, "fear");
  assert.equal(barValues({ scores: {} }).top, "angry");
});
