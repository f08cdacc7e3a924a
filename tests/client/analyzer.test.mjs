// The "Analyse a photo or video" panel (client/analyzer.js) with a fake document, fetch,
// XMLHttpRequest, overlay and timers: upload progress, polling until done, results, errors,
// Clear / new file / page leave sending DELETE, and stale answers being ignored.
import { test } from "node:test";
import assert from "node:assert/strict";

import { AnalysisPanel, MAX_POLL_FAILURES } from "../../client/analyzer.js";
import { POLL_MS } from "../../client/analyze.js";

// ------------------------------------------------------------------ fakes

/** A stand-in for an element: the properties and methods the panel uses. */
function el(tag = "div") {
  const classes = new Set();
  const attrs = {};
  const listeners = {};
  const node = {
    tagName: tag.toUpperCase(), textContent: "", hidden: false, disabled: false, value: "",
    dataset: {}, style: {}, children: [], files: null, src: "", alt: "", href: "", title: "",
    className: "", loads: 0, max: 1,
    classList: {
      toggle: (c, on) => (on ? classes.add(c) : classes.delete(c)),
      contains: (c) => classes.has(c),
    },
    setAttribute: (k, v) => { attrs[k] = String(v); if (k === "src") node.src = String(v); },
    getAttribute: (k) => (k in attrs ? attrs[k] : null),
    removeAttribute: (k) => { delete attrs[k]; if (k === "src") node.src = ""; },
    addEventListener: (type, fn) => { (listeners[type] ||= []).push(fn); },
    dispatch: (type, e = {}) => (listeners[type] || []).forEach((fn) => fn(e)),
    append: (...kids) => { node.children.push(...kids); },
    replaceChildren: (...kids) => { node.children = kids; },
    contains: (other) => other === node || node.children.some((c) => c.contains && c.contains(other)),
    load: () => { node.loads += 1; },
    decode: () => Promise.resolve(),
  };
  return node;
}

/** All text of a fake element and its children. */
function text(node) {
  if (!node) return "";
  return (node.textContent || "") + (node.children || []).map(text).join("");
}

const fakeDoc = {
  createElement: (tag) => el(tag),
  createTextNode: (t) => ({ textContent: t }),
};

function makeUi() {
  const names = ["analyze", "analyzeDrop", "analyzeFile", "analyzeClear", "analyzeStatus",
                 "analyzeError", "uploadRow", "uploadBar", "uploadText", "jobRow", "jobBar",
                 "jobText", "analysis", "analysisName", "photoResult", "photo", "photoCanvas",
                 "photoFaces", "videoResult", "jobVideo", "jobChart", "jobFacts", "jobShare",
                 "jobFacesTable", "jobFaces", "jobMore", "jobDownloads"];
  return Object.fromEntries(names.map((n) => [n, el()]));
}

/** XMLHttpRequest whose answer the test gives. */
class FakeXhr {
  constructor() {
    this.listeners = {};
    this.uploadListeners = {};
    this.upload = { addEventListener: (t, fn) => { (this.uploadListeners[t] ||= []).push(fn); } };
    this.aborted = false;
  }

  addEventListener(t, fn) { (this.listeners[t] ||= []).push(fn); }

  open(method, url) { this.method = method; this.url = url; }

  send(body) { this.body = body; }

  fire(t) { (this.listeners[t] || []).forEach((fn) => fn({})); }

  progress(loaded, total) {
    (this.uploadListeners.progress || []).forEach((fn) => fn({ lengthComputable: true, loaded, total }));
  }

  respond(status, body) {
    this.status = status;
    this.responseText = typeof body === "string" ? body : JSON.stringify(body);
    this.fire("load");
  }

  abort() { this.aborted = true; this.fire("abort"); }
}

const json = (body, status = 200) => new Response(JSON.stringify(body), {
  status, headers: { "Content-Type": "application/json" } });

/** fetch that records calls and answers with `handler(url, init)` (a Response or a throw). */
function fakeFetch(handler) {
  const calls = [];
  const fn = async (url, init = {}) => {
    calls.push({ url, init });
    return handler(url, init);
  };
  fn.calls = calls;
  return fn;
}

function fakeTimers() {
  let next = 1;
  const pending = new Map();
  return {
    pending,
    setTimeout: (fn, ms) => { const id = next++; pending.set(id, { fn, ms }); return id; },
    clearTimeout: (id) => { pending.delete(id); },
    /** Run the timers due now (each one once). */
    runAll() {
      const due = [...pending.entries()];
      pending.clear();
      for (const [, t] of due) t.fn();
      return due.length;
    },
  };
}

const flush = async () => { for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r)); };

const SUMMARY = {
  frames_analysed: 18, duration_s: 1.2,
  faces: [{ id: 1, frames: 18, first_s: 0, last_s: 1.13, dominant: "happy",
            share: { happy: 0.9, neutral: 0.1 } }],
  share: { happy: 0.9, neutral: 0.1 },
  files: ["annotated.mp4", "chart.png", "frames.csv", "frames.jsonl", "summary.json"],
};

function setup({ handler, token = "", tokenMissing = null } = {}) {
  const ui = makeUi();
  const xhrs = [];
  const timers = fakeTimers();
  const draws = [];
  const state = {};
  const fetchFn = fakeFetch(handler || (() => json({ deleted: true })));
  const urls = { made: [], revoked: [], createObjectURL(f) { this.made.push(f); return `blob:${this.made.length}`; },
                 revokeObjectURL(u) { this.revoked.push(u); } };
  const panel = new AnalysisPanel(ui, {
    token: () => token, tokenMissing: () => tokenMissing, state, fetch: fetchFn,
    createXhr: () => { const x = new FakeXhr(); xhrs.push(x); return x; },
    createOverlay: () => ({ last: null, draw(m) { this.last = m; draws.push(m); }, clear() { this.last = null; } }),
    doc: fakeDoc, urls, setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout,
    log: { error: () => {} },
  });
  panel.init(null);
  return { panel, ui, xhrs, timers, draws, state, fetchFn, urls };
}

const video = () => new File([new Uint8Array(2048)], "clip.mp4", { type: "video/mp4" });
const photo = () => new File([new Uint8Array(64)], "two.png", { type: "image/png" });
const deletes = (fetchFn) => fetchFn.calls.filter((c) => c.init.method === "DELETE");

/** A video uploaded and accepted as job j1; the first poll is in flight or answered. */
async function uploaded(t) {
  const done = t.panel.analyse(video());
  const xhr = t.xhrs.at(-1);
  xhr.respond(202, { job: "j1", name: "clip.mp4", status: "queued", progress: 0 });
  await done;
  await flush();
  return xhr;
}

// ------------------------------------------------------------------ video

test("a video is uploaded with progress, polled until done and its results shown", async () => {
  let answer = { job: "j1", name: "clip.mp4", status: "running", progress: 0.4 };
  const t = setup({ token: "tok", handler: (url, init) => (init.method === "DELETE" ? json({ deleted: true }) : json(answer)) });
  assert.equal(t.ui.analyzeClear.disabled, true);
  const done = t.panel.analyse(video());
  const xhr = t.xhrs[0];
  assert.equal(xhr.method, "POST");
  assert.equal(xhr.url, "/api/jobs?token=tok");
  const sent = xhr.body.get("file");
  assert.equal(sent.name, "clip.mp4"); // the file name is kept
  assert.equal(sent.size, 2048);
  assert.equal(t.state.phase, "uploading");
  assert.equal(t.ui.uploadRow.hidden, false);
  assert.equal(t.ui.analyzeClear.disabled, false); // Clear cancels an upload too
  assert.match(t.ui.analyzeStatus.textContent, /Uploading the video “clip\.mp4” \(2\.0 kB\)/);

  xhr.progress(1024, 2048);
  assert.equal(t.state.upload, 0.5);
  assert.equal(t.ui.uploadBar.value, 0.5);
  assert.equal(t.ui.uploadText.textContent, "50%");
  assert.equal(t.ui.uploadBar.getAttribute("aria-valuetext"), "50%");

  xhr.respond(202, { job: "j1", name: "clip.mp4", status: "queued", progress: 0 });
  await done;
  await flush();
  assert.equal(t.state.job, "j1");
  assert.equal(t.state.upload, 1);
  assert.equal(t.ui.uploadRow.hidden, true);
  assert.equal(t.ui.jobRow.hidden, false);
  assert.deepEqual(t.fetchFn.calls.map((c) => c.url), ["/api/jobs/j1?token=tok"]);
  assert.equal(t.state.phase, "running");
  assert.equal(t.ui.jobBar.value, 0.4);
  assert.equal(t.ui.analyzeStatus.textContent, "Analysing “clip.mp4”…");
  assert.equal(t.timers.pending.size, 1);
  assert.equal([...t.timers.pending.values()][0].ms, POLL_MS);

  answer = { job: "j1", name: "clip.mp4", status: "done", progress: 1, summary: SUMMARY,
             files: SUMMARY.files };
  t.timers.runAll();
  await flush();
  assert.equal(t.state.phase, "done");
  assert.equal(t.timers.pending.size, 0, "polling stops when done");
  assert.equal(t.state.polls, 2);
  assert.equal(t.ui.jobRow.hidden, true);
  assert.equal(t.ui.analysis.hidden, false);
  assert.equal(t.ui.videoResult.hidden, false);
  assert.equal(t.ui.jobVideo.src, "/api/jobs/j1/annotated.mp4?token=tok");
  assert.equal(t.ui.jobChart.src, "/api/jobs/j1/chart.png?token=tok");
  assert.deepEqual(t.ui.jobDownloads.children.map((li) => li.children[0].href), [
    "/api/jobs/j1/frames.csv?download=1&token=tok",
    "/api/jobs/j1/frames.jsonl?download=1&token=tok",
    "/api/jobs/j1/summary.json?download=1&token=tok",
    "/api/jobs/j1/annotated.mp4?download=1&token=tok",
    "/api/jobs/j1/chart.png?download=1&token=tok",
  ]);
  assert.equal(t.ui.jobFaces.children.length, 1);
  assert.match(text(t.ui.jobFaces.children[0]), /#1happy 90%.*happy 90%, neutral 10%/);
  assert.match(text(t.ui.jobFacts), /Frames analysed18/);
  assert.equal(t.ui.jobShare.children.length, 2);
  assert.equal(t.ui.jobShare.children[0].style.width, "90.00%");
  assert.match(t.ui.analyzeStatus.textContent, /is analysed\. 1 face, 18 frames analysed; mostly happy \(90%\)\./);
  assert.equal(t.ui.analyzeError.hidden, true);
  assert.equal(deletes(t.fetchFn).length, 0, "results stay until cleared");
});

test("Clear deletes the job on the server, stops polling and empties the panel", async () => {
  const t = setup({ handler: (url, init) => json(init.method === "DELETE" ? { deleted: true }
    : { job: "j1", name: "clip.mp4", status: "running", progress: 0.2 }) });
  await uploaded(t);
  assert.equal(t.timers.pending.size, 1);
  t.ui.analyzeFile.value = "C:\\fakepath\\clip.mp4";
  t.ui.analyzeClear.dispatch("click");
  const [del] = deletes(t.fetchFn);
  assert.equal(del.url, "/api/jobs/j1");
  assert.equal(del.init.keepalive, true);
  assert.equal(t.timers.pending.size, 0);
  assert.equal(t.state.phase, "idle");
  assert.equal(t.state.job, null);
  assert.deepEqual(t.state.deleted, ["j1"]);
  assert.equal(t.ui.analysis.hidden, true);
  assert.equal(t.ui.jobRow.hidden, true);
  assert.equal(t.ui.analyzeFile.value, "");
  assert.equal(t.ui.analyzeClear.disabled, true);
  assert.match(t.ui.analyzeStatus.textContent, /Cleared/);
  await flush();
  assert.equal(t.fetchFn.calls.length, 2, "no poll after Clear");
});

test("Clear during the upload aborts it and sends nothing else", async () => {
  const t = setup();
  const done = t.panel.analyse(video());
  t.ui.analyzeClear.dispatch("click");
  await done;
  assert.equal(t.xhrs[0].aborted, true);
  assert.equal(t.fetchFn.calls.length, 0);
  assert.equal(t.state.phase, "idle");
  assert.equal(t.ui.uploadRow.hidden, true);
});

test("a new file deletes the previous job; the page leaving deletes the current one", async () => {
  const t = setup({ handler: (url, init) => json(init.method === "DELETE" ? { deleted: true }
    : { job: url.includes("j2") ? "j2" : "j1", name: "clip.mp4", status: "done", progress: 1, summary: SUMMARY }) });
  await uploaded(t);
  assert.equal(t.state.phase, "done");
  const second = t.panel.analyse(video());
  assert.deepEqual(deletes(t.fetchFn).map((c) => c.url), ["/api/jobs/j1"]);
  assert.equal(t.ui.jobVideo.src, "", "the old video is let go");
  assert.ok(t.ui.jobVideo.loads >= 1);
  t.xhrs[1].respond(202, { job: "j2", name: "clip.mp4", status: "queued", progress: 0 });
  await second;
  await flush();
  assert.equal(t.state.job, "j2");
  t.panel.release(); // pagehide
  assert.deepEqual(deletes(t.fetchFn).map((c) => c.url), ["/api/jobs/j1", "/api/jobs/j2"]);
  assert.ok(deletes(t.fetchFn).every((c) => c.init.keepalive === true));
  assert.equal(t.ui.analysis.hidden, false, "leaving changes nothing on screen");
  t.panel.release();
  assert.equal(deletes(t.fetchFn).length, 2, "deleted once");
});

for (const [status, body, expected] of [
  [415, { error: "not a video this server can read (mp4, mov, webm, mkv, avi, flv)" },
   "Not a video this server can read (mp4, mov, webm, mkv, avi, flv)."],
  [413, { error: "video too large (at most 100 MB)" }, "Video too large (at most 100 MB)."],
  [503, { error: "server busy: 2 videos are being analysed; try later" },
   "Server busy: 2 videos are being analysed; try later."],
  [502, "<html>Bad gateway</html>", "The video could not be analysed (HTTP 502)."],
]) {
  test(`an upload answered ${status} shows the message and polls nothing`, async () => {
    const t = setup();
    const done = t.panel.analyse(video());
    t.xhrs[0].respond(status, body);
    await done;
    assert.equal(t.state.phase, "error");
    assert.equal(t.state.error, expected);
    assert.equal(t.ui.analyzeError.hidden, false);
    assert.equal(t.ui.analyzeError.textContent, expected);
    assert.equal(t.ui.uploadRow.hidden, true);
    assert.equal(t.fetchFn.calls.length, 0);
    assert.equal(t.timers.pending.size, 0);
    assert.equal(t.ui.analyzeClear.disabled, false, "Clear empties the error");
  });
}

test("a network error during the upload is shown", async () => {
  const t = setup();
  const done = t.panel.analyse(video());
  t.xhrs[0].fire("error");
  await done;
  assert.equal(t.state.phase, "error");
  assert.match(t.state.error, /could not be sent/);
});

test("a failed job shows its error and is deleted at once", async () => {
  const t = setup({ handler: (url, init) => json(init.method === "DELETE" ? { deleted: true }
    : { job: "j1", name: "clip.mp4", status: "failed", progress: 0.3, error: "cannot open as video" }) });
  await uploaded(t);
  assert.equal(t.state.phase, "failed");
  assert.equal(t.state.error, "The analysis failed: cannot open as video.");
  assert.equal(t.ui.analyzeError.textContent, "The analysis failed: cannot open as video.");
  assert.equal(t.ui.jobRow.hidden, true);
  assert.equal(t.timers.pending.size, 0);
  assert.deepEqual(deletes(t.fetchFn).map((c) => c.url), ["/api/jobs/j1"]);
});

test("a job that broke off part way is shown with a warning, not as a failure", async () => {
  const t = setup({ handler: () => json({ job: "j1", name: "clip.mp4", status: "done", progress: 1,
    error: "the video breaks off; what was analysed before is kept",
    summary: { ...SUMMARY, error: "decoding stopped at 0.8 s" } }) });
  await uploaded(t);
  assert.equal(t.state.phase, "done");
  assert.equal(t.ui.analyzeError.hidden, true);
  assert.ok(t.ui.analyzeStatus.classList.contains("warn"));
  assert.match(t.ui.analyzeStatus.textContent, /in part.*decoding stopped at 0\.8 s/);
  assert.equal(t.ui.videoResult.hidden, false);
});

test("a job gone from the server (404) is an error with nothing left to delete", async () => {
  const t = setup({ handler: (url, init) => (init.method === "DELETE" ? json({}) : json({ error: "no such job" }, 404)) });
  await uploaded(t);
  assert.equal(t.state.phase, "error");
  assert.match(t.state.error, /no longer on the server/);
  t.ui.analyzeClear.dispatch("click");
  assert.equal(deletes(t.fetchFn).length, 0);
});

test("polling survives a few network errors, then gives up", async () => {
  let fails = 2;
  const t = setup({ handler: (url, init) => {
    if (init.method === "DELETE") return json({});
    if (fails > 0) { fails -= 1; throw new TypeError("network"); }
    return json({ job: "j1", name: "clip.mp4", status: "running", progress: 0.5 });
  } });
  await uploaded(t);
  for (let i = 0; i < 2; i++) { t.timers.runAll(); await flush(); }
  assert.equal(t.state.phase, "running");
  assert.equal(t.ui.jobBar.value, 0.5);
  fails = 100;
  for (let i = 0; i < MAX_POLL_FAILURES; i++) { t.timers.runAll(); await flush(); }
  assert.equal(t.state.phase, "error");
  assert.match(t.state.error, /Lost the connection/);
  assert.equal(t.timers.pending.size, 0);
});

// ------------------------------------------------------------------ photo

test("a photo is posted raw and every face is drawn and listed", async () => {
  const t = setup({ token: "tok", handler: () => json({ width: 1280, height: 480, faces: [
    { box: [700, 140, 200, 200], label: "sad", score: 0.61, scores: { sad: 0.61 } },
    { box: [160, 120, 220, 220], label: "happy", score: 0.94, scores: { happy: 0.94 } },
  ] }) });
  const file = photo();
  await t.panel.analyse(file);
  const [call] = t.fetchFn.calls;
  assert.equal(call.url, "/api/predict?token=tok");
  assert.equal(call.init.method, "POST");
  assert.equal(call.init.body, file);
  assert.equal(call.init.headers["Content-Type"], "image/png");
  assert.equal(t.xhrs.length, 0);
  assert.equal(t.ui.photo.src, "blob:1");
  assert.match(t.ui.photo.alt, /2 faces marked/);
  const [drawn] = t.draws;
  assert.deepEqual([drawn.width, drawn.height], [1280, 480]);
  assert.deepEqual(drawn.faces.map((f) => [f.id, f.label]), [[1, "happy"], [2, "sad"]]);
  assert.deepEqual(t.ui.photoFaces.children.map(text), ["Face 1: happy 94%", "Face 2: sad 61%"]);
  assert.equal(t.ui.photoResult.hidden, false);
  assert.equal(t.ui.analysis.hidden, false);
  assert.equal(t.ui.analysisName.textContent, "two.png");
  assert.equal(t.state.phase, "done");
  assert.equal(t.state.kind, "photo");
  assert.equal(t.ui.analyzeStatus.textContent, "2 faces found in “two.png”: happy 94%, sad 61%.");
  t.ui.analyzeClear.dispatch("click");
  assert.deepEqual(t.urls.revoked, ["blob:1"]);
  assert.equal(t.ui.photo.src, "");
  assert.equal(deletes(t.fetchFn).length, 0, "a photo leaves nothing on the server");
});

test("a photo without faces says so", async () => {
  const t = setup({ handler: () => json({ width: 100, height: 80, faces: [] }) });
  await t.panel.analyse(photo());
  assert.deepEqual(t.ui.photoFaces.children.map(text), ["No face found."]);
  assert.equal(t.ui.analyzeStatus.textContent, "No face found in “two.png”.");
});

test("a refused photo shows the server's message", async () => {
  const t = setup({ handler: () => json({ error: "only JPEG, PNG and WebP images are accepted" }, 415) });
  await t.panel.analyse(new File(["x"], "a.gif", { type: "image/gif" }));
  assert.equal(t.fetchFn.calls[0].init.headers["Content-Type"], "image/gif");
  assert.equal(t.state.error, "Only JPEG, PNG and WebP images are accepted.");
  assert.equal(t.ui.photoResult.hidden, true);
  assert.equal(t.draws.length, 0);
});

test("an answer for a cleared photo is ignored", async () => {
  let release;
  const t = setup({ handler: () => new Promise((r) => { release = () => r(json({ width: 10, height: 10, faces: [] })); }) });
  const done = t.panel.analyse(photo());
  await flush();
  t.ui.analyzeClear.dispatch("click");
  release();
  await done;
  assert.equal(t.state.phase, "idle");
  assert.equal(t.ui.analysis.hidden, true);
  assert.equal(t.draws.length, 0);
});

// ------------------------------------------------------------------ before any request

test("a file that is neither photo nor video is refused by the page", async () => {
  const t = setup();
  await t.panel.analyse(new File(["hi"], "notes.txt", { type: "text/plain" }));
  assert.equal(t.state.phase, "error");
  assert.match(t.state.error, /“notes\.txt” is neither a photo nor a video/);
  assert.equal(t.fetchFn.calls.length + t.xhrs.length, 0);
});

test("without a required token nothing is sent", async () => {
  const t = setup({ tokenMissing: "This server requires an access token" });
  await t.panel.analyse(video());
  assert.equal(t.state.error, "This server requires an access token");
  assert.equal(t.fetchFn.calls.length + t.xhrs.length, 0);
});

test("the file input and a drop on the zone both start an analysis", async () => {
  const t = setup({ handler: () => json({ width: 10, height: 10, faces: [] }) });
  t.ui.analyzeFile.files = [photo()];
  t.ui.analyzeFile.dispatch("change");
  await flush();
  assert.equal(t.fetchFn.calls.length, 1);
  const dropped = { preventDefault() { this.prevented = true; }, dataTransfer: { types: ["Files"], files: [photo()] } };
  t.ui.analyzeDrop.dispatch("dragover", { ...dropped, dataTransfer: { ...dropped.dataTransfer } });
  assert.ok(t.ui.analyzeDrop.classList.contains("over"));
  t.ui.analyzeDrop.dispatch("drop", dropped);
  await flush();
  assert.equal(dropped.prevented, true);
  assert.ok(!t.ui.analyzeDrop.classList.contains("over"));
  assert.equal(t.fetchFn.calls.length, 2);
});
