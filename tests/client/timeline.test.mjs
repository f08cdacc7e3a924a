// The timeline's CSV built in the page from timeline.json (what a session that has ended still
// offers for download): the server's format, faces and seconds in order.
import { test } from "node:test";
import assert from "node:assert/strict";

import { timelineCsv } from "../../client/timeline.js";

test("timelineCsv writes the server's CSV from timeline.json", () => {
  const data = {
    labels: ["happy", "sad"], start: 1700000000,
    faces: {
      10: [{ t: 1, n: 3, probs: [0.25, 0.75] }],
      2: [{ t: 4, n: 15, probs: [0.5, 0.5] }, { t: 0, n: 14, probs: [0.9, 0.1] }],
    },
  };
  assert.equal(timelineCsv(data), "face_id,second,n,happy,sad\n"
    + "2,0,14,0.9000,0.1000\n2,4,15,0.5000,0.5000\n10,1,3,0.2500,0.7500\n");
  assert.equal(timelineCsv({ labels: ["happy"], faces: {} }), "face_id,second,n,happy\n");
});
