// "Analyse a photo or video": the panel beside Start camera, independent of the live camera.
//
//   photo: POST the bytes to /api/predict, show the photo (an <img>) with every face's box and
//          label drawn on a canvas over it (overlay.js), and a numbered list of the faces.
//   video: upload it to POST /api/jobs with XMLHttpRequest (upload progress), poll
//          GET /api/jobs/{id} every POLL_MS until done or failed, then show the annotated video,
//          the chart, the summary and download links.
//
// The server keeps a video's results until DELETE /api/jobs/{id}: Clear, choosing the next file
// and leaving the page send it (on pagehide with fetch keepalive). Every asynchronous step checks
// that its run is still the current one, so Clear or a new file cancels the old one cleanly.
// Network, timers, the overlay and the document are injectable (tests/client/analyzer.test.mjs).
// State for tests and tools: `state` (window.facedapps.analysis).

import {
  POLL_MS, errorFromBody, fileKind, formatBytes, isFinished, jobStatusText, jobUrl, normalizeJob,
  percent, photoContentType, photoFaces, photoStatusText, predictUrl, resultUrls, summarySentence,
  summaryView, uploadErrorMessage as uploadMessage,
} from "./analyze.js";
import { colorFor } from "./labels.js";
import { errorField } from "./net.js";

/** Consecutive failed polls (network errors) before the page gives up on a job. */
export const MAX_POLL_FAILURES = 5;

const NOT_SUPPORTED = "is neither a photo nor a video: choose a JPEG, PNG or WebP photo, or a video "
  + "(mp4, mov, webm, mkv, avi).";

function initialState() {
  return {
    // idle | photo (sent, waiting) | uploading | queued | running | done | failed | error
    phase: "idle",
    kind: null, // "photo" | "video"
    name: null,
    job: null, // id of the server's job while it exists
    upload: 0, // 0..1
    progress: 0, // 0..1
    status: "",
    error: null,
    faces: [], // photo: [{id, label, score, text}]
    summary: null, // video: the job's summary
    files: [],
    polls: 0,
    deleted: [], // ids this page sent DELETE for
  };
}

export class AnalysisPanel {
  /**
   * @param {object} ui the panel's elements (see main.js: analyze*, photo*, job*)
   * @param {object} deps `token` () => string, `tokenMissing` () => message|null, `state`
   *   (object filled in place), `fetch`, `createXhr`, `createOverlay(canvas, img)`, `doc`,
   *   `urls` ({createObjectURL, revokeObjectURL}), `setTimeout`, `clearTimeout`, `log`
   */
  constructor(ui, deps = {}) {
    this.ui = ui;
    this.token = deps.token || (() => "");
    this.tokenMissing = deps.tokenMissing || (() => null);
    this.state = Object.assign(deps.state || {}, initialState());
    this.fetch = deps.fetch || ((...args) => globalThis.fetch(...args));
    this.createXhr = deps.createXhr || (() => new XMLHttpRequest());
    this.doc = deps.doc || globalThis.document;
    this.urls = deps.urls || globalThis.URL;
    this.setTimeout = deps.setTimeout || ((fn, ms) => setTimeout(fn, ms));
    this.clearTimeout = deps.clearTimeout || ((t) => clearTimeout(t));
    this.log = deps.log || console;
    this.overlay = deps.createOverlay ? deps.createOverlay(ui.photoCanvas, ui.photo) : null;

    this.run = 0; // incremented by every new file, Clear and release; older steps are ignored
    this.xhr = null;
    this.timer = null;
    this.photoUrl = null;
    this.pollFailures = 0;
    this.released = false;
  }

  /** Wire the file input, the drop zone and Clear; `win` stops stray drops opening the file. */
  init(win = globalThis.window) {
    const ui = this.ui;
    ui.analyzeFile.addEventListener("change", () => {
      const file = ui.analyzeFile.files && ui.analyzeFile.files[0];
      if (file) this.analyse(file);
    });
    const drop = ui.analyzeDrop;
    const hasFiles = (e) => !!(e.dataTransfer
      && Array.from(e.dataTransfer.types || []).includes("Files"));
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (e) => {
        if (!hasFiles(e)) return;
        e.preventDefault(); // this zone takes the drop
        e.dataTransfer.dropEffect = "copy";
        drop.classList.toggle("over", true);
      });
    }
    drop.addEventListener("dragleave", (e) => {
      if (!e.relatedTarget || !drop.contains(e.relatedTarget)) drop.classList.toggle("over", false);
    });
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.toggle("over", false);
      const file = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
      if (ui.analyzeFile) ui.analyzeFile.value = ""; // the chooser no longer names an older file
      if (file) this.analyse(file);
    });
    if (win) {
      // A file dropped next to the zone would replace the page (and end a camera session).
      for (const type of ["dragover", "drop"]) {
        win.addEventListener(type, (e) => { if (hasFiles(e)) e.preventDefault(); });
      }
      // Back to the page from the back/forward cache: a video's results were deleted on leaving.
      win.addEventListener("pageshow", (e) => {
        if (e.persisted && this.released && this.state.kind === "video"
            && this.state.phase !== "idle") {
          this.resetView();
          this.ui.analyzeFile.value = "";
          this.setStatus("The results were deleted from the server when you left the page.");
        }
      });
    }
    ui.analyzeClear.addEventListener("click", () => this.clear());
    this.updateClear();
  }

  // ------------------------------------------------------------ messages

  setPhase(phase) {
    this.state.phase = phase;
    if (this.ui.analyze) this.ui.analyze.dataset.phase = phase;
    this.updateClear();
  }

  updateClear() {
    this.ui.analyzeClear.disabled = this.state.phase === "idle";
  }

  setStatus(text, tone = "info") {
    this.state.status = text;
    this.ui.analyzeStatus.textContent = text;
    this.ui.analyzeStatus.classList.toggle("warn", tone === "warn");
  }

  showError(text) {
    this.state.error = text;
    this.ui.analyzeError.textContent = text;
    this.ui.analyzeError.hidden = false;
  }

  clearError() {
    this.state.error = null;
    this.ui.analyzeError.textContent = "";
    this.ui.analyzeError.hidden = true;
  }

  /** End run `my` with `message` shown (phase "error", or "failed" for a failed job). */
  fail(my, message, phase = "error") {
    if (my !== this.run) return;
    this.stopWork();
    this.showProgress(null);
    this.setPhase(phase);
    this.showError(message);
    this.setStatus(""); // the alert says it all; the polite region should not repeat it
  }

  /** Upload and analysis bars: `which` "upload", "job" or null (both hidden). */
  showProgress(which) {
    this.ui.uploadRow.hidden = which !== "upload";
    this.ui.jobRow.hidden = which !== "job";
  }

  setBar(bar, text, frac) {
    const v = Math.min(1, Math.max(0, Number(frac) || 0));
    bar.value = v;
    bar.setAttribute("aria-valuetext", percent(v));
    text.textContent = percent(v);
  }

  setUpload(frac) {
    this.state.upload = frac;
    this.setBar(this.ui.uploadBar, this.ui.uploadText, frac);
  }

  setJobProgress(frac) {
    this.state.progress = frac;
    this.setBar(this.ui.jobBar, this.ui.jobText, frac);
  }

  // ------------------------------------------------------------ one file

  /** Analyse `file` (a File): photo or video by type; cancels and deletes the previous one. */
  async analyse(file) {
    this.released = false;
    this.discard();
    const my = this.run;
    this.resetView();
    const kind = fileKind(file);
    Object.assign(this.state, { kind, name: file.name || null });
    if (!kind) {
      this.fail(my, `“${file.name || "This file"}” ${NOT_SUPPORTED}`);
      return;
    }
    const missing = this.tokenMissing();
    if (missing) {
      this.fail(my, missing);
      return;
    }
    this.ui.analysisName.textContent = file.name || (kind === "photo" ? "photo" : "video");
    try {
      if (kind === "photo") await this.analysePhoto(my, file);
      else await this.analyseVideo(my, file);
    } catch (err) {
      this.log.error("analysis failed:", err);
      this.fail(my, `Unexpected error: ${err && err.message ? err.message : err}`);
    }
  }

  // ------------------------------------------------------------ photo

  async analysePhoto(my, file) {
    this.setPhase("photo");
    this.setStatus(`Analysing the photo “${file.name}”…`);
    let resp;
    try {
      resp = await this.fetch(predictUrl(this.token()), {
        method: "POST", body: file, headers: { "Content-Type": photoContentType(file) }, cache: "no-store",
      });
    } catch (_) {
      this.fail(my, uploadMessage(0, null, "photo"));
      return;
    }
    if (my !== this.run) return;
    if (!resp.ok) {
      this.fail(my, uploadMessage(resp.status, await errorField(resp), "photo"));
      return;
    }
    const result = await resp.json();
    if (my !== this.run) return;
    const width = Number(result && result.width);
    const height = Number(result && result.height);
    if (!(width > 0 && height > 0)) {
      this.fail(my, "The server's answer was not understood (no image size).");
      return;
    }
    const { faces, rows } = photoFaces(result);
    this.state.faces = rows;
    this.fillFaceList(rows);
    this.ui.analysis.hidden = false;
    this.ui.photoResult.hidden = false; // shown first: the overlay sizes itself to the photo
    await this.showPhoto(my, file, { width, height, faces });
    if (my !== this.run) return;
    this.setPhase("done");
    this.setStatus(photoStatusText(rows, file.name));
  }

  /** Show `file` in the <img> and draw `msg` (width, height, faces) over it once it is loaded. */
  async showPhoto(my, file, msg) {
    const img = this.ui.photo;
    this.photoUrl = this.urls.createObjectURL(file);
    const n = msg.faces.length;
    img.alt = `The photo “${file.name}” with ${n} face${n === 1 ? "" : "s"} marked`;
    img.src = this.photoUrl;
    try {
      if (img.decode) await img.decode();
    } catch (_) {
      // The server read it but this browser cannot show it: the list still says what was found.
    }
    if (my !== this.run) return;
    if (this.overlay) this.overlay.draw(msg);
  }

  fillFaceList(rows) {
    const list = this.ui.photoFaces;
    list.replaceChildren();
    if (!rows.length) {
      const li = this.doc.createElement("li");
      li.className = "none";
      li.textContent = "No face found.";
      list.append(li);
      return;
    }
    for (const r of rows) {
      const li = this.doc.createElement("li");
      li.dataset.label = r.label;
      const sw = this.doc.createElement("i");
      sw.className = "swatch";
      sw.style.background = colorFor(r.label);
      sw.setAttribute("aria-hidden", "true");
      const text = this.doc.createElement("span");
      text.textContent = r.text;
      li.append(sw, text);
      list.append(li);
    }
  }

  // ------------------------------------------------------------ video

  async analyseVideo(my, file) {
    this.setPhase("uploading");
    this.setUpload(0);
    this.setJobProgress(0);
    this.showProgress("upload");
    const size = formatBytes(file.size);
    this.setStatus(`Uploading the video “${file.name}”${size ? ` (${size})` : ""}…`);
    const answer = await this.upload(my, file);
    if (answer === null || my !== this.run) return; // cancelled
    this.xhr = null;
    if (answer.status !== 202 && answer.status !== 200) {
      this.fail(my, uploadMessage(answer.status, errorFromBody(answer.text), "video"));
      return;
    }
    let body = null;
    try { body = JSON.parse(answer.text); } catch (_) { /* checked below */ }
    const job = normalizeJob(body);
    if (!job) {
      this.fail(my, "The server's answer to the upload was not understood.");
      return;
    }
    this.state.job = job.job;
    this.setUpload(1);
    this.showJob(job);
    this.poll(my, job.job);
  }

  /**
   * POST `file` as multipart field "file" with upload progress; resolves to
   * `{status, text}` (status 0: network error) or null when aborted.
   */
  upload(my, file) {
    return new Promise((resolve) => {
      const xhr = this.createXhr();
      this.xhr = xhr;
      xhr.open("POST", jobUrl(null, this.token()));
      xhr.upload.addEventListener("progress", (e) => {
        if (my === this.run && e.lengthComputable && e.total > 0) this.setUpload(e.loaded / e.total);
      });
      xhr.addEventListener("load", () => resolve({ status: xhr.status, text: xhr.responseText || "" }));
      xhr.addEventListener("error", () => resolve({ status: 0, text: "" }));
      xhr.addEventListener("timeout", () => resolve({ status: 0, text: "" }));
      xhr.addEventListener("abort", () => resolve(null));
      const form = new FormData();
      form.append("file", file, file.name || "video");
      xhr.send(form);
    });
  }

  /** Show a job state (status text only when it changed: it goes to a live region). */
  showJob(job) {
    const changed = job.status !== this.state.phase;
    this.setPhase(job.status);
    this.showProgress(isFinished(job) ? null : "job");
    this.setJobProgress(job.status === "done" ? 1 : job.progress);
    if (changed || job.status === "done") {
      const { text, tone } = jobStatusText(job);
      if (job.status !== "failed") this.setStatus(text, tone);
    }
  }

  schedule(my, id) {
    this.clearTimeout(this.timer);
    this.timer = this.setTimeout(() => {
      this.timer = null;
      this.poll(my, id);
    }, POLL_MS);
  }

  /** GET the job once; again after POLL_MS until it is done or failed. */
  async poll(my, id) {
    if (my !== this.run) return;
    let resp;
    try {
      resp = await this.fetch(jobUrl(id, this.token()), { cache: "no-store" });
    } catch (_) {
      if (my !== this.run) return;
      this.pollFailures += 1;
      if (this.pollFailures >= MAX_POLL_FAILURES) {
        this.fail(my, "Lost the connection to the server while the video was analysed.");
      } else {
        this.schedule(my, id);
      }
      return;
    }
    if (my !== this.run) return;
    this.state.polls += 1;
    if (!resp.ok) {
      if (resp.status === 404) this.state.job = null; // nothing left to delete
      this.fail(my, uploadMessage(resp.status, await errorField(resp), "video"));
      return;
    }
    let job = null;
    try { job = normalizeJob(await resp.json()); } catch (_) { /* checked below */ }
    if (my !== this.run) return;
    this.pollFailures = 0;
    if (!job) {
      this.fail(my, "The server's answer about the job was not understood.");
      return;
    }
    this.showJob(job);
    if (job.status === "done") {
      this.showResults(job);
    } else if (job.status === "failed") {
      // Nothing of a failed job is worth keeping: delete it now.
      this.deleteJob();
      this.fail(my, jobStatusText(job).text, "failed");
    } else {
      this.schedule(my, id);
    }
  }

  /** A finished job: the annotated video, the chart, the summary and the download links. */
  showResults(job) {
    const ui = this.ui;
    const urls = resultUrls(job.job, this.token(), job.files);
    this.state.summary = job.summary || null;
    this.state.files = job.files || [];
    ui.analysis.hidden = false;
    ui.videoResult.hidden = false;
    if (urls.video) {
      ui.jobVideo.src = urls.video;
      ui.jobVideo.hidden = false;
    } else {
      ui.jobVideo.hidden = true;
    }
    if (urls.chart) {
      ui.jobChart.src = urls.chart;
      ui.jobChart.hidden = false;
    } else {
      ui.jobChart.hidden = true;
    }
    const view = summaryView(job.summary);
    this.fillSummary(view);
    this.fillDownloads(urls.downloads);
    const { text, tone } = jobStatusText(job);
    this.setStatus(`${text} ${summarySentence(view)}`, tone);
  }

  fillSummary(view) {
    const d = this.doc;
    const facts = this.ui.jobFacts;
    facts.replaceChildren();
    const fact = (k, v) => {
      if (v === "" || v === null || v === undefined) return;
      const dt = d.createElement("dt");
      dt.textContent = k;
      const dd = d.createElement("dd");
      dd.textContent = String(v);
      facts.append(dt, dd);
    };
    fact("Duration", view.duration);
    fact("Frames analysed", view.frames);
    fact("Faces", view.total);
    fact("Overall", view.overallText || "no face found");

    const bar = this.ui.jobShare;
    bar.replaceChildren();
    bar.setAttribute("aria-label", view.overallText
      ? `Share of time per expression, all faces: ${view.overallText}` : "No face found");
    for (const [label, frac] of view.overall) {
      const seg = d.createElement("span");
      seg.style.width = `${(frac * 100).toFixed(2)}%`;
      seg.style.background = colorFor(label);
      seg.title = `${label} ${percent(frac)}`;
      bar.append(seg);
    }
    bar.hidden = view.overall.length === 0;

    const body = this.ui.jobFaces;
    body.replaceChildren();
    for (const f of view.faces) {
      const tr = d.createElement("tr");
      const cell = (text, tag = "td") => {
        const c = d.createElement(tag);
        c.textContent = text;
        tr.append(c);
        return c;
      };
      cell(`#${f.id}`, "th").setAttribute("scope", "row");
      const dom = cell("");
      const sw = d.createElement("i");
      sw.className = "swatch";
      sw.style.background = colorFor(f.dominant);
      sw.setAttribute("aria-hidden", "true");
      const pct = f.dominantShare === null ? "" : ` ${percent(f.dominantShare)}`;
      dom.append(sw, d.createTextNode(`${f.dominant}${pct}`));
      cell(f.seen);
      cell(f.shareText);
      body.append(tr);
    }
    this.ui.jobFacesTable.hidden = view.faces.length === 0;
    this.ui.jobMore.textContent = view.more
      ? `…and ${view.more} more briefly seen face${view.more === 1 ? "" : "s"} (see the summary file).`
      : "";
    this.ui.jobMore.hidden = !view.more;
  }

  fillDownloads(downloads) {
    const list = this.ui.jobDownloads;
    list.replaceChildren();
    for (const dl of downloads) {
      const li = this.doc.createElement("li");
      const a = this.doc.createElement("a");
      a.href = dl.url;
      a.textContent = dl.text;
      a.dataset.file = dl.file;
      a.setAttribute("download", "");
      li.append(a);
      list.append(li);
    }
  }

  // ------------------------------------------------------------ clearing

  /** Stop the upload and the polling (no UI change). */
  stopWork() {
    this.clearTimeout(this.timer);
    this.timer = null;
    this.pollFailures = 0;
    if (this.xhr) {
      const xhr = this.xhr;
      this.xhr = null;
      try { xhr.abort(); } catch (_) { /* already done */ }
    }
  }

  /** DELETE the current job on the server (keepalive: it also works while the page unloads). */
  deleteJob() {
    const id = this.state.job;
    if (!id) return;
    this.state.job = null;
    this.state.deleted.push(id);
    try {
      const p = this.fetch(jobUrl(id, this.token()), { method: "DELETE", keepalive: true });
      if (p && p.catch) p.catch(() => { /* the server forgets it after a while anyway */ });
    } catch (_) { /* ditto */ }
  }

  /** Cancel whatever runs and delete the server's copy (a new run begins). */
  discard() {
    this.run += 1;
    this.stopWork();
    this.deleteJob();
  }

  /** Empty the results (no state about the server). */
  resetView() {
    const ui = this.ui;
    const deleted = this.state.deleted;
    Object.assign(this.state, initialState(), { deleted });
    this.clearError();
    this.showProgress(null);
    this.setUpload(0);
    this.setJobProgress(0);
    ui.analysis.hidden = true;
    ui.photoResult.hidden = true;
    ui.videoResult.hidden = true;
    if (this.overlay) this.overlay.clear();
    ui.photo.removeAttribute("src");
    if (this.photoUrl) this.urls.revokeObjectURL(this.photoUrl);
    this.photoUrl = null;
    ui.photoFaces.replaceChildren();
    ui.jobVideo.removeAttribute("src");
    if (ui.jobVideo.load) ui.jobVideo.load(); // let go of the old video
    ui.jobChart.removeAttribute("src");
    ui.jobFacts.replaceChildren();
    ui.jobShare.replaceChildren();
    ui.jobFaces.replaceChildren();
    ui.jobDownloads.replaceChildren();
    ui.jobMore.textContent = "";
    ui.analysisName.textContent = "";
    this.setPhase("idle");
  }

  /** The Clear button: cancel, delete the server's copy, empty the panel. */
  clear() {
    const had = this.state.phase !== "idle";
    this.discard();
    this.resetView();
    this.ui.analyzeFile.value = "";
    this.setStatus(had ? "Cleared: nothing of this analysis is kept on the server." : "");
  }

  /** The page is going away: stop and delete the server's copy, no UI changes. */
  release() {
    this.released = true;
    this.discard();
  }
}
