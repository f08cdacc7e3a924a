import { test } from "node:test";
import assert from "node:assert/strict";

import { MUTED, faceAtPoint, faceLabel, fitLabel } from "../../client/overlay.js";

test("a confident face shows its label, confidence and id", () => {
  assert.deepEqual(faceLabel({ label: "happy", score: 0.912, id: 3, uncertain: false }),
    { text: "happy 91%  #3", muted: false });
});

test("an uncertain face is muted and marked with a question mark, not hidden", () => {
  assert.deepEqual(faceLabel({ label: "sad", score: 0.41, id: 7, uncertain: true }),
    { text: "sad? 41%  #7", muted: true });
  assert.match(MUTED, /^#[0-9a-f]{6}$/);
});

test("faces from /api/predict (no id, no uncertain field) are drawn as before", () => {
  assert.deepEqual(faceLabel({ label: "angry", score: 0.5 }), { text: "angry 50%", muted: false });
  assert.deepEqual(faceLabel({}), { text: "?", muted: false });
});

test("faceAtPoint: the smallest drawn box under the point, or null", () => {
  const big = { face: { id: 1 }, x: 0, y: 0, w: 200, h: 200 };
  const inner = { face: { id: 2 }, x: 50, y: 50, w: 40, h: 40 };
  assert.equal(faceAtPoint([big, inner], 60, 60), inner.face); // a face inside another
  assert.equal(faceAtPoint([big, inner], 10, 10), big.face);
  assert.equal(faceAtPoint([big, inner], 300, 10), null);
  assert.equal(faceAtPoint([], 1, 1), null);
});

test("fitLabel: full labels for a few faces; in a crowd, box-sized and shortened when wide", () => {
  const face = { id: 17, label: "surprise", score: 0.64, uncertain: false };
  const measure = (text, px) => text.length * px * 0.6;
  assert.deepEqual(fitLabel(face, 20, 20, 3, 18, measure), { text: "surprise 64%  #17", px: 18 });
  const crowd = fitLabel(face, 20, 30, 30, 18, measure); // a small face among 30
  assert.deepEqual(crowd, { text: "sur #17", px: 10 });
  const roomy = fitLabel(face, 150, 90, 30, 18, measure); // a large one in the same crowd
  assert.deepEqual(roomy, { text: "surprise 64%  #17", px: 18 });
  assert.equal(fitLabel({ ...face, uncertain: true }, 20, 30, 30, 18, measure).text, "sur? #17");
});
