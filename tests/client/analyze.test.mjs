// "Analyse a photo or video", the pure part (client/analyze.js): file routing, URLs, job states,
// error messages and the rows of the face lists and the summary.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  DOWNLOADS, POLL_MS, errorFromBody, extensionOf, fileKind, formatBytes, formatSeconds,
  isFinished, jobStatusText, jobUrl, normalizeJob, percent, photoContentType, photoFaces,
  photoStatusText, predictUrl, resultUrls, shareText, sortedShare, summarySentence, summaryView,
  sentence, uploadErrorMessage,
} from "../../client/analyze.js";

// ------------------------------------------------------------------ files

test("files are routed by MIME type first", () => {
  assert.equal(fileKind({ name: "a.jpg", type: "image/jpeg" }), "photo");
  assert.equal(fileKind({ name: "a.png", type: "image/png" }), "photo");
  assert.equal(fileKind({ name: "a.webp", type: "image/webp" }), "photo");
  assert.equal(fileKind({ name: "a.webp", type: "" }), "photo");
  assert.equal(fileKind({ name: "clip.mp4", type: "video/mp4" }), "video");
  assert.equal(fileKind({ name: "clip.mov", type: "video/quicktime" }), "video");
  assert.equal(fileKind({ name: "clip.webm", type: "video/webm" }), "video");
  // The type wins over a misleading extension.
  assert.equal(fileKind({ name: "photo.mp4", type: "image/png" }), "photo");
});

test("without a MIME type the extension decides, case-insensitively", () => {
  assert.equal(fileKind({ name: "IMG_0001.JPG", type: "" }), "photo");
  assert.equal(fileKind({ name: "x.jpeg" }), "photo");
  assert.equal(fileKind({ name: "clip.MKV", type: "" }), "video");
  assert.equal(fileKind({ name: "clip.avi", type: "application/octet-stream" }), "video");
  assert.equal(fileKind({ name: "clip.flv", type: "" }), "video");
});

test("other files are neither photo nor video", () => {
  assert.equal(fileKind({ name: "notes.txt", type: "text/plain" }), null);
  assert.equal(fileKind({ name: "README", type: "" }), null);
  assert.equal(fileKind({ name: ".mp4", type: "" }), null); // a dot file, no extension
  assert.equal(fileKind(null), null);
});

test("extensionOf takes the last extension only", () => {
  assert.equal(extensionOf("a.tar.GZ"), "gz");
  assert.equal(extensionOf("noext"), "");
  assert.equal(extensionOf("trailing."), "");
  assert.equal(extensionOf(undefined), "");
});

test("a photo is posted with its own image type, or one from its extension", () => {
  assert.equal(photoContentType({ name: "a.png", type: "image/png" }), "image/png");
  assert.equal(photoContentType({ name: "a.jpg", type: "image/jpeg" }), "image/jpeg");
  assert.equal(photoContentType({ name: "a.PNG", type: "" }), "image/png");
  assert.equal(photoContentType({ name: "a.jpeg", type: "" }), "image/jpeg");
  assert.equal(photoContentType({ name: "a.WebP", type: "" }), "image/webp");
});

// ------------------------------------------------------------------ URLs

test("job URLs carry the token as ?token= (or &token= after ?download=1)", () => {
  assert.equal(predictUrl(""), "/api/predict");
  assert.equal(predictUrl("t k"), "/api/predict?token=t%20k");
  assert.equal(jobUrl(null, ""), "/api/jobs");
  assert.equal(jobUrl(null, "s3"), "/api/jobs?token=s3");
  assert.equal(jobUrl("ab12", ""), "/api/jobs/ab12");
  assert.equal(jobUrl("ab12", "s3", "annotated.mp4"), "/api/jobs/ab12/annotated.mp4?token=s3");
  assert.equal(jobUrl("ab12", "", "frames.csv", { download: true }), "/api/jobs/ab12/frames.csv?download=1");
  assert.equal(jobUrl("ab12", "a&b", "frames.csv", { download: true }),
    "/api/jobs/ab12/frames.csv?download=1&token=a%26b");
  assert.equal(jobUrl("a/b", ""), "/api/jobs/a%2Fb"); // an odd id cannot leave its path segment
});

test("result URLs: video, chart and the downloads", () => {
  const all = resultUrls("j1", "tok");
  assert.equal(all.video, "/api/jobs/j1/annotated.mp4?token=tok");
  assert.equal(all.chart, "/api/jobs/j1/chart.png?token=tok");
  assert.deepEqual(all.downloads.map((d) => d.url), [
    "/api/jobs/j1/frames.csv?download=1&token=tok",
    "/api/jobs/j1/frames.jsonl?download=1&token=tok",
    "/api/jobs/j1/summary.json?download=1&token=tok",
    "/api/jobs/j1/annotated.mp4?download=1&token=tok",
    "/api/jobs/j1/chart.png?download=1&token=tok",
  ]);
  assert.deepEqual(all.downloads.map((d) => d.file), DOWNLOADS.map((d) => d.file));
  // A job without an annotated video (the server lists its files): no video, the rest stays.
  const some = resultUrls("j1", "", ["frames.csv", "frames.jsonl", "chart.png", "summary.json"]);
  assert.equal(some.video, null);
  assert.equal(some.chart, "/api/jobs/j1/chart.png");
  assert.deepEqual(some.downloads.map((d) => d.file),
    ["frames.csv", "frames.jsonl", "summary.json", "chart.png"]);
  assert.deepEqual(resultUrls("j1", "", ["summary.json"]).downloads.map((d) => d.file), ["summary.json"]);
});

// ------------------------------------------------------------------ job state

test("normalizeJob checks the fields and clamps progress", () => {
  assert.deepEqual(normalizeJob({ job: "j1", name: "clip.mp4", status: "queued", progress: 0 }),
    { job: "j1", name: "clip.mp4", status: "queued", progress: 0 });
  assert.equal(normalizeJob({ job: "j1", status: "running", progress: 1.7 }).progress, 1);
  assert.equal(normalizeJob({ job: "j1", status: "running", progress: "x" }).progress, 0);
  assert.equal(normalizeJob({ job: "j1", status: "failed", error: "broken" }).error, "broken");
  assert.equal(normalizeJob({ job: "j1", status: "failed", error: 5 }).error, undefined);
  const done = normalizeJob({ job: "j1", status: "done", progress: 1, summary: { files: ["a.csv", 3] } });
  assert.deepEqual(done.files, ["a.csv"]); // from the summary when `files` is missing
  assert.deepEqual(normalizeJob({ job: "j1", status: "done", files: ["x", null] }).files, ["x"]);
  for (const bad of [null, [], "x", { status: "done" }, { job: "", status: "done" },
                     { job: "j1", status: "paused" }]) {
    assert.equal(normalizeJob(bad), null, JSON.stringify(bad));
  }
});

test("polling stops at done and failed only", () => {
  assert.equal(isFinished({ status: "done" }), true);
  assert.equal(isFinished({ status: "failed" }), true);
  assert.equal(isFinished({ status: "queued" }), false);
  assert.equal(isFinished({ status: "running" }), false);
  assert.equal(isFinished(null), false);
  assert.ok(POLL_MS >= 200 && POLL_MS <= 2000);
});

test("each job state has its text; no percentage (the bar shows it)", () => {
  const q = jobStatusText({ job: "j", name: "clip.mp4", status: "queued", progress: 0 });
  assert.match(q.text, /clip\.mp4.*waiting/);
  assert.equal(q.tone, "info");
  const r = jobStatusText({ job: "j", name: "clip.mp4", status: "running", progress: 0.42 });
  assert.match(r.text, /^Analysing “clip\.mp4”…$/);
  assert.doesNotMatch(r.text, /42/);
  assert.deepEqual(jobStatusText({ job: "j", name: "", status: "done", summary: {} }),
    { text: "The video is analysed.", tone: "info" });
  const broke = jobStatusText({ job: "j", name: "c.mp4", status: "done",
                                summary: { error: "decoding failed at 3.2 s" } });
  assert.equal(broke.tone, "warn");
  assert.match(broke.text, /in part.*decoding failed at 3\.2 s/);
  const failed = jobStatusText({ job: "j", status: "failed", error: "cannot open as video" });
  assert.deepEqual(failed, { text: "The analysis failed: cannot open as video.", tone: "error" });
  assert.match(jobStatusText({ job: "j", status: "failed" }).text, /unknown error/);
  assert.deepEqual(jobStatusText(null), { text: "", tone: "info" });
});

// ------------------------------------------------------------------ errors

test("upload errors show the server's message, as a sentence", () => {
  assert.equal(uploadErrorMessage(413, "video too large (at most 100 MB)", "video"),
    "Video too large (at most 100 MB).");
  assert.equal(uploadErrorMessage(413, null, "photo"), "The photo is too large for this server.");
  assert.equal(uploadErrorMessage(415, "not a video this server can read (mp4, mov)", "video"),
    "Not a video this server can read (mp4, mov).");
  assert.equal(uploadErrorMessage(415, "only JPEG and PNG images are accepted", "photo"),
    "Only JPEG and PNG images are accepted.");
  assert.equal(uploadErrorMessage(415, "", "video"), "Not a video this server can read.");
  assert.equal(uploadErrorMessage(503, "server busy: 2 videos are being analysed; try later"),
    "Server busy: 2 videos are being analysed; try later.");
  assert.equal(uploadErrorMessage(503, "too many faces queued"), "The server is busy: Too many faces queued.");
  assert.equal(uploadErrorMessage(503, null), "The server is busy; try again later.");
  assert.equal(uploadErrorMessage(401, "access token required"), "Not authorised: access token required.");
  assert.equal(uploadErrorMessage(403, ""), "Not authorised: a valid access token is required.");
  assert.equal(uploadErrorMessage(400, "truncated or corrupt PNG image", "photo"),
    "The photo could not be analysed (HTTP 400): truncated or corrupt PNG image.");
  assert.equal(uploadErrorMessage(500, null), "The video could not be analysed (HTTP 500).");
  assert.match(uploadErrorMessage(404, "no such job"), /no longer on the server: no such job/);
  assert.match(uploadErrorMessage(0, null, "video"), /could not be sent.*upload limit/);
  assert.doesNotMatch(uploadErrorMessage(0, null, "photo"), /upload limit/);
});

test("sentence capitalises and ends with a full stop once", () => {
  assert.equal(sentence("video too large"), "Video too large.");
  assert.equal(sentence("done."), "Done.");
  assert.equal(sentence("  "), "");
});

test("errorFromBody reads {error} from a JSON text only", () => {
  assert.equal(errorFromBody('{"error": "too large"}'), "too large");
  assert.equal(errorFromBody('{"other": 1}'), null);
  assert.equal(errorFromBody("<html>Bad gateway</html>"), null);
  assert.equal(errorFromBody(""), null);
});

// ------------------------------------------------------------------ photo rows

test("photo faces are numbered left to right and listed with label and confidence", () => {
  const result = {
    width: 1280, height: 480,
    faces: [
      { box: [700, 140, 200, 200], label: "sad", score: 0.6, scores: { sad: 0.6 } },
      { box: [160, 120, 220, 220], label: "happy", score: 0.914 },
      { box: [1, 2, 3], label: "broken" }, // no usable box: left out
      { box: [900, 10, 50, 50] }, // no label or score
    ],
  };
  const { faces, rows } = photoFaces(result);
  assert.deepEqual(faces.map((f) => [f.id, f.box[0]]), [[1, 160], [2, 700], [3, 900]]);
  assert.deepEqual(faces[1].scores, { sad: 0.6 }); // other fields kept for drawing
  assert.deepEqual(rows, [
    { id: 1, label: "happy", score: 0.914, text: "Face 1: happy 91%" },
    { id: 2, label: "sad", score: 0.6, text: "Face 2: sad 60%" },
    { id: 3, label: "?", score: null, text: "Face 3: ?" },
  ]);
  assert.equal(result.faces[0].id, undefined, "the server's answer is not changed");
  assert.deepEqual(photoFaces({}), { faces: [], rows: [] });
});

test("photo status: how many faces and what they show", () => {
  assert.equal(photoStatusText([], "a.jpg"), "No face found in “a.jpg”.");
  assert.equal(photoStatusText([{ label: "happy", score: 0.9 }]), "1 face found: happy 90%.");
  assert.equal(photoStatusText([{ label: "happy", score: 0.9 }, { label: "sad", score: null }], "b.png"),
    "2 faces found in “b.png”: happy 90%, sad.");
});

// ------------------------------------------------------------------ summary

const SUMMARY = {
  frames_analysed: 141,
  duration_s: 5.601,
  faces: [
    { id: 2, frames: 3, first_s: 4.1, last_s: 4.3, dominant: "sad",
      share: { angry: 0, sad: 0.6667, neutral: 0.3333 } },
    { id: 1, frames: 138, first_s: 0, last_s: 5.56, dominant: "happy",
      share: { angry: 0, disgust: 0, fear: 0, happy: 0.8, sad: 0.05, surprise: 0.05, neutral: 0.1 } },
  ],
  share: { angry: 0, disgust: 0, fear: 0, happy: 0.79, sad: 0.06, surprise: 0.05, neutral: 0.1 },
  files: ["frames.csv"],
};

test("the summary lists faces longest seen first with dominant expression and share", () => {
  const v = summaryView(SUMMARY);
  assert.equal(v.duration, "5.6 s");
  assert.equal(v.frames, 141);
  assert.equal(v.total, 2);
  assert.equal(v.more, 0);
  assert.deepEqual(v.faces.map((f) => f.id), [1, 2]);
  const [main, brief] = v.faces;
  assert.equal(main.dominant, "happy");
  assert.equal(main.dominantShare, 0.8);
  assert.equal(main.seen, "0.0 s – 5.6 s");
  assert.equal(main.shareText, "happy 80%, neutral 10%, sad 5%");
  assert.equal(brief.shareText, "sad 67%, neutral 33%");
  assert.deepEqual(v.overall.map(([l]) => l), ["happy", "neutral", "sad", "surprise"]);
  assert.equal(v.overallText, "happy 79%, neutral 10%, sad 6%, surprise 5%");
  assert.equal(v.error, null);
  assert.equal(summarySentence(v), "2 faces, 141 frames analysed; mostly happy (79%).");
});

test("a long summary is cut at the limit; odd or empty summaries still give a view", () => {
  const many = { faces: Array.from({ length: 15 }, (_, i) => ({ id: i + 1, frames: 15 - i, dominant: "fear",
                                                                 share: { fear: 1 } })) };
  const v = summaryView(many, 12);
  assert.equal(v.faces.length, 12);
  assert.equal(v.more, 3);
  assert.equal(v.total, 15);
  const empty = summaryView({ frames_analysed: 20, duration_s: 75.5, faces: [], share: {},
                              error: "broke off at 3 s" });
  assert.equal(empty.duration, "1:15");
  assert.deepEqual(empty.faces, []);
  assert.equal(empty.overallText, "");
  assert.equal(empty.error, "broke off at 3 s");
  assert.equal(summarySentence(empty), "0 faces, 20 frames analysed.");
  const none = summaryView(undefined);
  assert.equal(none.total, 0);
  assert.equal(none.frames, null);
  assert.equal(summarySentence(none), "0 faces.");
  // No dominant field: the largest share is used.
  assert.equal(summaryView({ faces: [{ id: 1, frames: 2, share: { sad: 0.2, fear: 0.8 } }] }).faces[0].dominant, "fear");
});

test("shares are sorted largest first without zeros", () => {
  assert.deepEqual(sortedShare({ a: 0.1, b: 0, c: 0.5, d: "x" }), [["c", 0.5], ["a", 0.1]]);
  assert.deepEqual(sortedShare(null), []);
  assert.equal(shareText({ a: 0.5, b: 0.3, c: 0.2 }, 2), "a 50%, b 30%");
});

test("numbers for people", () => {
  assert.equal(percent(0.834), "83%");
  assert.equal(percent(1.2), "100%");
  assert.equal(percent(-1), "0%");
  assert.equal(percent(null), "");
  assert.equal(percent("x"), "");
  assert.equal(formatBytes(830), "830 B");
  assert.equal(formatBytes(12_400), "12.4 kB");
  assert.equal(formatBytes(3_100_000), "3.1 MB");
  assert.equal(formatBytes(2.5e9), "2.50 GB");
  assert.equal(formatBytes(undefined), "");
  assert.equal(formatSeconds(4.25), "4.3 s");
  assert.equal(formatSeconds(65), "1:05");
  assert.equal(formatSeconds(-1), "");
});
