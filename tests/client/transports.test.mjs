// How both transports handle incoming messages (parsed by client/protocol.js): results, server
// errors, pings, hello. Only the message paths are exercised: no peer connection or socket.
import { test } from "node:test";
import assert from "node:assert/strict";

import { RtcTransport } from "../../client/rtc.js";
import { WsTransport } from "../../client/wsstream.js";

const RESULT = JSON.stringify({
  type: "result", session: "s", frame: 1, width: 640, height: 480, latency_ms: 3,
  faces: [{ id: 1, box: [1, 2, 30, 40], label: "sad", score: 0.7, scores: { sad: 0.7 } }],
});

function recorder() {
  const calls = { results: [], errors: [], rtts: [], lost: [] };
  return {
    calls,
    callbacks: {
      onResult: (m) => calls.results.push(m),
      onServerError: (t) => calls.errors.push(t),
      onRtt: (ms) => calls.rtts.push(ms),
      onLost: (r) => calls.lost.push(r),
    },
  };
}

test("WebRTC: a result is delivered and marks the connection ready", (t) => {
  const { calls, callbacks } = recorder();
  const rtc = new RtcTransport({ ...callbacks, stream: null, iceServers: [] });
  t.after(() => rtc.close()); // stops the ping interval started by the first result
  rtc._onMessage(RESULT);
  assert.equal(rtc.ready, true);
  assert.equal(calls.results.length, 1);
  assert.deepEqual(calls.results[0].faces[0].box, [1, 2, 30, 40]);
});

test("WebRTC: malformed and non-JSON messages are ignored", () => {
  const { calls, callbacks } = recorder();
  const rtc = new RtcTransport({ ...callbacks, stream: null, iceServers: [] });
  rtc._onMessage("not json");
  rtc._onMessage('{"type":"result","faces":"none","width":640,"height":480}');
  rtc._onMessage('{"type":"result","faces":[]}');
  assert.equal(rtc.ready, false);
  assert.equal(calls.results.length, 0);
  rtc.close();
});

test("WebRTC: server errors, pings and pongs", () => {
  const { calls, callbacks } = recorder();
  const rtc = new RtcTransport({ ...callbacks, stream: null, iceServers: [] });
  const sent = [];
  rtc.dc = { readyState: "open", bufferedAmount: 0, send: (s) => sent.push(s) };
  rtc._onMessage('{"type":"error","error":"frame failed"}');
  rtc._onMessage('{"type":"error","error":7}');
  assert.deepEqual(calls.errors, ["frame failed"]);
  rtc._onMessage(new TextEncoder().encode('{"type":"ping","t":1}'));
  assert.deepEqual(sent, ['{"type":"pong"}']);
  rtc._sendPing();
  assert.equal(JSON.parse(sent[1]).type, "ping");
  rtc._onMessage('{"type":"pong"}');
  assert.equal(calls.rtts.length, 1);
  assert.ok(calls.rtts[0] >= 0);
  rtc._onMessage('{"type":"pong"}'); // no ping outstanding: no measurement
  assert.equal(calls.rtts.length, 1);
  rtc.close();
  rtc._onMessage(RESULT); // closed: ignored
  assert.equal(calls.results.length, 0);
});

/** WsTransport draws frames on a canvas: a stand-in document for its constructor. */
function withFakeDom(t) {
  const saved = { document: globalThis.document, WebSocket: globalThis.WebSocket };
  globalThis.document = { createElement: () => ({ getContext: () => ({}) }) };
  globalThis.WebSocket = { OPEN: 1, CONNECTING: 0 };
  t.after(() => Object.assign(globalThis, saved));
}

test("WebSocket: hello gives the session; a result answers the frame in flight", (t) => {
  withFakeDom(t);
  const { calls, callbacks } = recorder();
  const ws = new WsTransport({ ...callbacks, video: null });
  ws._onMessage('{"type":"hello","session":"abc"}');
  assert.equal(ws.session, "abc");
  ws._onMessage('{"type":"hello","session":5}');
  assert.equal(ws.session, "abc");
  ws.inFlight = true;
  ws.sentAt = performance.now();
  ws._onMessage(RESULT);
  assert.equal(ws.inFlight, false);
  assert.equal(calls.results.length, 1);
  assert.equal(calls.rtts.length, 1);
  ws.close();
});

test("WebSocket: an error answers the frame in flight and is remembered", (t) => {
  withFakeDom(t);
  const { calls, callbacks } = recorder();
  const ws = new WsTransport({ ...callbacks, video: null });
  ws.inFlight = true;
  ws._onMessage('{"type":"error","error":"undecodable frame"}');
  assert.equal(ws.inFlight, false);
  assert.deepEqual(calls.errors, ["undecodable frame"]);
  assert.equal(ws._serverError, "undecodable frame");
  ws.inFlight = true;
  ws._onMessage('{"type":"result","faces":[]}'); // malformed: the frame stays in flight
  assert.equal(ws.inFlight, true);
  assert.equal(calls.results.length, 0);
  ws.close();
});

test("WebSocket: a server ping is answered with a pong", (t) => {
  withFakeDom(t);
  const { callbacks } = recorder();
  const ws = new WsTransport({ ...callbacks, video: null });
  const sent = [];
  ws.ws = { readyState: 1, send: (s) => sent.push(s), close() {} };
  ws._onMessage('{"type":"ping"}');
  assert.deepEqual(sent, ['{"type":"pong"}']);
  ws.close();
});
