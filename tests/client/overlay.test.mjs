import { test } from "node:test";
import assert from "node:assert/strict";

import { MUTED, faceLabel } from "../../client/overlay.js";

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
