// How the page controller hosts the analysis panel (client/controller.js) and how the overlay
// sizes itself over an <img> as well as a <video> (client/overlay.js mediaSize).
import { test } from "node:test";
import assert from "node:assert/strict";

import { PageController } from "../../client/controller.js";
import { mediaSize } from "../../client/overlay.js";

function el() {
  const listeners = {};
  return {
    textContent: "", hidden: false, disabled: false, value: "", checked: false, dataset: {},
    classList: { toggle() {}, contains: () => false },
    addEventListener: (type, fn) => { (listeners[type] ||= []).push(fn); },
    dispatch: (type, e) => (listeners[type] || []).forEach((fn) => fn(e)),
  };
}

function setup({ config = {}, params = "", withAnalysis = true } = {}) {
  const names = ["body", "start", "stop", "mirror", "tokenField", "token", "status", "error",
                 "announce", "video", "rTransport", "rFps", "rLatency", "rRtt", "rFaces"];
  const ui = Object.fromEntries(names.map((n) => [n, el()]));
  const calls = [];
  const analysis = { init: (win) => calls.push(["init", win]), release: () => calls.push(["release"]) };
  const win = el();
  const c = new PageController(ui, {
    params: new URLSearchParams(params),
    fetch: async () => new Response(JSON.stringify({ access_token_required: false, ...config })),
    createViews: () => ({
      overlay: { setMirror() {}, clear() {} }, bars: { clear() {} },
      announcer: { clear() {} }, timeline: { stop() {} },
      analysis: withAnalysis ? analysis : undefined,
    }),
    log: { warn() {} },
  });
  return { c, ui, calls, win };
}

test("the controller starts the analysis panel and releases it when the page goes", async () => {
  const { c, calls, win } = setup();
  await c.init(win);
  c.dispose();
  assert.deepEqual(calls, [["init", win]]);
  assert.equal(typeof c.app.analysis, "object", "the panel's state is published on window.facedapps");
  win.dispatch("pagehide");
  assert.deepEqual(calls.at(-1), ["release"], "leaving the page deletes the video job");
  assert.equal(c.app.state, "idle", "no camera was running: nothing else changes");
});

test("a page without the panel's elements works as before", async () => {
  const { c, win } = setup({ withAnalysis: false });
  await c.init(win);
  c.dispose();
  assert.equal(c.analysis, null);
  win.dispatch("pagehide"); // no error
});

test("tokenMissing: only when the server needs a token and none is given", async () => {
  const open = setup();
  await open.c.init(null);
  open.c.dispose();
  assert.equal(open.c.tokenMissing(), null);

  const locked = setup({ config: { access_token_required: true } });
  await locked.c.init(null);
  locked.c.dispose();
  assert.match(locked.c.tokenMissing(), /requires an access token/);
  locked.ui.token.value = " s3cret ";
  assert.equal(locked.c.tokenMissing(), null);
  assert.equal(locked.c.token(), "s3cret");

  const linked = setup({ config: { access_token_required: true }, params: "token=abc" });
  await linked.c.init(null);
  linked.c.dispose();
  assert.equal(linked.c.tokenMissing(), null);
});

test("mediaSize reads a video's or an image's intrinsic size", () => {
  assert.deepEqual(mediaSize({ videoWidth: 640, videoHeight: 480 }), [640, 480]);
  assert.deepEqual(mediaSize({ naturalWidth: 1280, naturalHeight: 720 }), [1280, 720]);
  assert.deepEqual(mediaSize({ videoWidth: 0, videoHeight: 0 }), [0, 0]); // not loaded yet
  assert.deepEqual(mediaSize(null), [0, 0]);
});
