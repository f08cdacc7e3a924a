// Result / error / hello message parsing (client/protocol.js).
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  PONG, decodeText, normalizeFace, normalizeResult, parseMessage, pingMessage,
} from "../../client/protocol.js";

const LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
const scores = Object.fromEntries(LABELS.map((l) => [l, l === "happy" ? 0.94 : 0.01]));

function result(extra = {}) {
  return {
    type: "result", session: "abc", frame: 12, width: 640, height: 480, latency_ms: 7.25,
    faces: [{ id: 3, box: [10, 20, 100, 120], label: "happy", score: 0.94, scores }],
    ...extra,
  };
}

test("a server result message parses to an equal object", () => {
  const msg = parseMessage(JSON.stringify(result()));
  assert.deepEqual(msg, result());
  // The scores keep the server's label order (the bars and tests rely on it).
  assert.deepEqual(Object.keys(msg.faces[0].scores), LABELS);
});

test("bytes (ArrayBuffer / Uint8Array) are decoded as UTF-8", () => {
  const bytes = new TextEncoder().encode(JSON.stringify(result()));
  assert.equal(parseMessage(bytes).frame, 12);
  assert.equal(parseMessage(bytes.buffer).session, "abc");
  assert.equal(decodeText("plain"), "plain");
  assert.equal(decodeText(42), null);
});

test("non-JSON, non-object and array payloads are rejected", () => {
  for (const bad of ["", "{", "null", "3", '"result"', "[1,2]"]) {
    assert.equal(parseMessage(bad), null, bad);
  }
  assert.equal(parseMessage(12345), null);
});

test("results without faces array or with bad width/height are rejected", () => {
  assert.equal(normalizeResult(result({ faces: undefined })), null);
  assert.equal(normalizeResult(result({ faces: {} })), null);
  assert.equal(normalizeResult(result({ width: 0 })), null);
  assert.equal(normalizeResult(result({ height: "480" })), null);
  assert.equal(normalizeResult(result({ width: Number.NaN })), null);
  assert.equal(normalizeResult({ ...result(), type: "error" }), null);
  assert.equal(normalizeResult(null), null);
});

test("a result with no faces is valid", () => {
  const msg = parseMessage(JSON.stringify(result({ faces: [] })));
  assert.deepEqual(msg.faces, []);
  assert.equal(msg.width, 640);
});

test("faces without a usable box are dropped, the others kept", () => {
  const faces = [
    { box: [1, 2, 3], label: "sad" },
    { box: [1, 2, "3", 4], label: "sad" },
    { box: [1, 2, 3, Number.POSITIVE_INFINITY] },
    null,
    "face",
    { box: [-5, 0, 50, 60], label: "fear", score: 0.5 },
  ];
  const msg = normalizeResult(result({ faces }));
  assert.equal(msg.faces.length, 1);
  assert.deepEqual(msg.faces[0].box, [-5, 0, 50, 60]);
  assert.equal(msg.faces[0].label, "fear");
});

test("face fields of the wrong type are dropped; unknown fields are kept", () => {
  const f = normalizeFace({
    box: [0, 0, 10, 10], label: 7, score: "0.9", id: { x: 1 },
    scores: { happy: 0.5, sad: "x", fear: null, angry: 0.25 }, extra: "kept",
  });
  assert.equal("label" in f, false);
  assert.equal("score" in f, false);
  assert.equal("id" in f, false);
  assert.deepEqual(f.scores, { happy: 0.5, angry: 0.25 });
  assert.equal(f.extra, "kept");
  assert.equal("scores" in normalizeFace({ box: [0, 0, 1, 1], scores: [0.5] }), false);
});

test("normalizing copies: the input message is not changed", () => {
  const input = result({ faces: [{ box: [0, 0, 1, 1], label: 5 }] });
  const out = normalizeResult(input);
  assert.equal(input.faces[0].label, 5);
  assert.notEqual(out.faces[0], input.faces[0]);
  out.faces[0].box[0] = 99;
  assert.equal(input.faces[0].box[0], 0);
});

test("bad optional result fields are dropped", () => {
  const out = normalizeResult(result({ latency_ms: -1, session: 5, frame: 1.5 }));
  assert.equal("latency_ms" in out, false);
  assert.equal("session" in out, false);
  assert.equal("frame" in out, false);
  assert.equal(out.width, 640);
});

test("error messages carry a string or null", () => {
  assert.deepEqual(parseMessage('{"type":"error","error":"too many messages"}'),
                   { type: "error", error: "too many messages" });
  assert.equal(parseMessage('{"type":"error"}').error, null);
  assert.equal(parseMessage('{"type":"error","error":42}').error, null);
  const frameError = parseMessage('{"type":"error","session":"s","frame":4,"error":"bad frame"}');
  assert.equal(frameError.error, "bad frame");
  assert.equal(frameError.frame, 4);
});

test("hello carries the session id or null", () => {
  assert.equal(parseMessage('{"type":"hello","session":"s-1"}').session, "s-1");
  assert.equal(parseMessage('{"type":"hello","session":1}').session, null);
});

test("ping, pong and unknown types pass through for the caller", () => {
  assert.deepEqual(parseMessage('{"type":"ping","t":5}'), { type: "ping", t: 5 });
  assert.equal(parseMessage('{"type":"pong"}').type, "pong");
  assert.equal(parseMessage('{"type":"future","x":1}').x, 1);
});

test("the client's ping and pong messages", () => {
  assert.deepEqual(pingMessage(123), { type: "ping", t: 123 });
  assert.equal(typeof pingMessage().t, "number");
  assert.equal(JSON.stringify(PONG), '{"type":"pong"}');
  assert.throws(() => { PONG.type = "x"; }, TypeError); // shared, so frozen
});

test("the uncertain flag is kept when boolean and dropped otherwise", () => {
  const box = [1, 2, 3, 4];
  assert.equal(normalizeFace({ box, uncertain: true }).uncertain, true);
  assert.equal(normalizeFace({ box, uncertain: false }).uncertain, false);
  assert.equal("uncertain" in normalizeFace({ box, uncertain: "yes" }), false);
});
