// "Analyse a photo or video", the pure part: which route a file takes (photo or video), the URLs
// of a video job and its result files, the text shown for a job's status, the rows of the face
// lists and of a video's summary, and the messages of failed uploads. No DOM or network access,
// so all of it is unit-tested in Node (tests/client/analyze.test.mjs); analyzer.js does the rest.
//
// Routes (see docs/interface.md):
//   POST /api/predict              raw JPEG/PNG/WebP -> {"width","height","faces":[{box,label,score,scores}]}
//   POST /api/jobs                 multipart field "file" -> 202 {"job","name","status","progress"}
//   GET  /api/jobs/{id}            {"job","name","status","progress","error"?,"summary"?,"files"?}
//   GET  /api/jobs/{id}/{file}     annotated.mp4, chart.png, frames.csv, frames.jsonl, summary.json
//   DELETE /api/jobs/{id}          forget the job and its results now

import { withToken } from "./net.js";

/** How often a running job is polled. */
export const POLL_MS = 500;

/** Job states after which nothing changes any more. */
export const FINISHED = Object.freeze(["done", "failed"]);

const PHOTO_EXT = ["jpg", "jpeg", "jfif", "pjpeg", "pjp", "png", "webp"];
const IMAGE_EXT = [...PHOTO_EXT, "gif", "bmp", "heic", "heif", "avif", "tif", "tiff"];
const VIDEO_EXT = ["mp4", "m4v", "mov", "qt", "webm", "mkv", "avi", "flv", "mpg", "mpeg", "ts",
                   "3gp", "ogv", "wmv"];

/** The lower-case extension of a file name ("" when it has none). */
export function extensionOf(name) {
  const s = String(name || "");
  const dot = s.lastIndexOf(".");
  return dot > 0 && dot < s.length - 1 ? s.slice(dot + 1).toLowerCase() : "";
}

/**
 * "photo", "video" or null (neither) for a File-like `{name, type}`: by MIME type when the
 * browser gives one, otherwise by extension. Image types other than JPEG/PNG/WebP still count as a
 * photo: the server answers those with its own 415 message, which the page shows.
 */
export function fileKind(file) {
  if (!file) return null;
  const type = String(file.type || "").toLowerCase();
  if (type.startsWith("image/")) return "photo";
  if (type.startsWith("video/")) return "video";
  const ext = extensionOf(file.name);
  if (IMAGE_EXT.includes(ext)) return "photo";
  if (VIDEO_EXT.includes(ext)) return "video";
  return null;
}

/** The Content-Type a photo is posted with: its own image type, else one from its extension. */
export function photoContentType(file) {
  const type = String((file && file.type) || "").toLowerCase();
  if (type.startsWith("image/")) return type;
  const ext = extensionOf(file && file.name);
  return ext === "png" ? "image/png" : ext === "webp" ? "image/webp" : "image/jpeg";
}

/** Size for people: "830 B", "12.4 kB", "3.1 MB". */
export function formatBytes(n) {
  const v = Number(n);
  if (!Number.isFinite(v) || v < 0) return "";
  if (v < 1000) return `${Math.round(v)} B`;
  if (v < 1e6) return `${(v / 1e3).toFixed(1)} kB`;
  if (v < 1e9) return `${(v / 1e6).toFixed(1)} MB`;
  return `${(v / 1e9).toFixed(2)} GB`;
}

/** A fraction as a whole percentage: 0.834 -> "83%" (clamped to 0..100; "" when not a number). */
export function percent(frac) {
  const v = Number(frac);
  if (frac === null || frac === undefined || !Number.isFinite(v)) return "";
  return `${Math.round(Math.min(1, Math.max(0, v)) * 100)}%`;
}

/** Seconds as "4.2 s" below a minute, else "m:ss" ("1:05"). */
export function formatSeconds(s) {
  const v = Number(s);
  if (!Number.isFinite(v) || v < 0) return "";
  if (v < 60) return `${v.toFixed(1)} s`;
  const m = Math.floor(v / 60);
  const rest = Math.floor(v - m * 60);
  return `${m}:${String(rest).padStart(2, "0")}`;
}

// ------------------------------------------------------------------ URLs

/** `/api/predict` with the token. */
export function predictUrl(token) {
  return withToken("/api/predict", token);
}

/** `/api/jobs` (no id), `/api/jobs/{id}`, or `/api/jobs/{id}/{file}` (`?download=1`), with the token. */
export function jobUrl(id, token, file = null, { download = false } = {}) {
  let path = "/api/jobs";
  if (id !== null && id !== undefined && id !== "") path += `/${encodeURIComponent(id)}`;
  if (file) path += `/${encodeURIComponent(file)}`;
  if (download) path += "?download=1";
  return withToken(path, token);
}

/** The result files a page links to, in the order shown. */
export const DOWNLOADS = Object.freeze([
  { file: "frames.csv", text: "Frames (CSV)" },
  { file: "frames.jsonl", text: "Frames (JSON lines)" },
  { file: "summary.json", text: "Summary (JSON)" },
  { file: "annotated.mp4", text: "Annotated video (MP4)" },
  { file: "chart.png", text: "Chart (PNG)" },
]);

/**
 * The URLs of a finished job's results: `video` and `chart` (null when the job lists files and
 * that one is not among them) and `downloads` [{file, text, url}] for the files it has.
 * Without a `files` list every file is assumed present.
 */
export function resultUrls(id, token, files = null) {
  const has = (name) => !Array.isArray(files) || files.includes(name);
  return {
    video: has("annotated.mp4") ? jobUrl(id, token, "annotated.mp4") : null,
    chart: has("chart.png") ? jobUrl(id, token, "chart.png") : null,
    downloads: DOWNLOADS.filter((d) => has(d.file))
      .map((d) => ({ ...d, url: jobUrl(id, token, d.file, { download: true }) })),
  };
}

// ------------------------------------------------------------------ job state

const STATUSES = ["queued", "running", "done", "failed"];

/**
 * A checked copy of a job answer, or null when it is not one (no id or unknown status).
 * `progress` is clamped to 0..1; `error` is a string or absent; `files` an array of strings.
 */
export function normalizeJob(body) {
  if (!body || typeof body !== "object" || Array.isArray(body)) return null;
  const id = body.job;
  if ((typeof id !== "string" || !id) && !Number.isFinite(id)) return null;
  if (!STATUSES.includes(body.status)) return null;
  const p = Number(body.progress);
  const job = {
    job: String(id),
    name: typeof body.name === "string" ? body.name : "",
    status: body.status,
    progress: Number.isFinite(p) ? Math.min(1, Math.max(0, p)) : 0,
  };
  if (typeof body.error === "string" && body.error) job.error = body.error;
  if (body.summary && typeof body.summary === "object" && !Array.isArray(body.summary)) {
    job.summary = body.summary;
  }
  if (Array.isArray(body.files)) job.files = body.files.filter((f) => typeof f === "string");
  else if (job.summary && Array.isArray(job.summary.files)) {
    job.files = job.summary.files.filter((f) => typeof f === "string");
  }
  return job;
}

/** Whether polling stops at this job state. */
export function isFinished(job) {
  return !!job && FINISHED.includes(job.status);
}

/**
 * What the page says about a job: `{text, tone}` with tone "info", "warn" (done, but the video
 * broke off) or "error" (failed). The text has no percentage (the progress bar shows that), so
 * the polite live region it goes into speaks only when the state changes.
 */
export function jobStatusText(job) {
  if (!job) return { text: "", tone: "info" };
  const name = job.name ? `“${job.name}”` : "The video";
  switch (job.status) {
    case "queued":
      return { text: `${name} is uploaded and waiting for its turn…`, tone: "info" };
    case "running":
      return { text: `Analysing ${job.name ? name : "the video"}…`, tone: "info" };
    case "done": {
      const broke = job.summary && typeof job.summary.error === "string";
      if (broke) {
        return { text: `${name} could only be read in part: the results cover what was `
                       + `analysed before it broke off (${job.summary.error}).`, tone: "warn" };
      }
      return { text: `${name} is analysed.`, tone: "info" };
    }
    case "failed":
      return { text: `The analysis failed: ${job.error || "unknown error"}.`, tone: "error" };
    default:
      return { text: "", tone: "info" };
  }
}

// ------------------------------------------------------------------ errors

/** `text` as a sentence: capital first letter, a full stop at the end. */
export function sentence(text) {
  const t = String(text || "").trim();
  if (!t) return "";
  const s = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

/**
 * The message shown for a failed upload or poll: the server's `error` text where it says
 * enough by itself (413, 415, 503), else introduced by what failed; `kind` is "photo" or
 * "video". `serverText` may be null/"" (no JSON body), status 0 is a network error.
 */
export function uploadErrorMessage(status, serverText, kind = "video") {
  const what = kind === "photo" ? "photo" : "video";
  const text = typeof serverText === "string" ? serverText.trim() : "";
  const detail = text ? `: ${text}` : "";
  switch (status) {
    case 0:
      return `The ${what} could not be sent: the connection to the server failed`
        + `${what === "video" ? " (a very large file may be over the server's upload limit)" : ""}.`;
    case 401:
    case 403:
      return `Not authorised: ${text || "a valid access token is required"}.`;
    case 413:
      return text ? sentence(text) : `The ${what} is too large for this server.`;
    case 415:
      return text ? sentence(text) : `Not a ${what} this server can read.`;
    case 503:
      if (!text) return "The server is busy; try again later.";
      return /busy|capacity/i.test(text) ? sentence(text) : `The server is busy: ${sentence(text)}`;
    case 404:
      return `The results are no longer on the server${detail}.`;
    default:
      return `The ${what} could not be analysed (HTTP ${status})${detail}.`;
  }
}

/** The server's `error` field of a JSON body text; null when the text is not such JSON. */
export function errorFromBody(text) {
  try {
    const body = JSON.parse(text);
    return body && typeof body.error === "string" ? body.error : null;
  } catch (_) {
    return null;
  }
}

// ------------------------------------------------------------------ rows

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/**
 * The faces of a `/api/predict` answer, numbered 1..n from left to right (the number is drawn
 * on the photo and shown in the list): `{faces, rows}` where `faces` are the drawable faces
 * (with `id`) and `rows` `[{id, label, score, text}]`.
 */
export function photoFaces(result) {
  const raw = result && Array.isArray(result.faces) ? result.faces : [];
  const faces = raw
    .filter((f) => f && Array.isArray(f.box) && f.box.length === 4 && f.box.every(isNum))
    .slice()
    .sort((a, b) => a.box[0] - b.box[0] || a.box[1] - b.box[1])
    .map((f, i) => ({ ...f, id: i + 1 }));
  const rows = faces.map((f) => {
    const label = typeof f.label === "string" ? f.label : "?";
    const score = isNum(f.score) ? f.score : null;
    const pct = score === null ? "" : ` ${percent(score)}`;
    return { id: f.id, label, score, text: `Face ${f.id}: ${label}${pct}` };
  });
  return { faces, rows };
}

/** The status line after a photo: how many faces and what they show. */
export function photoStatusText(rows, name = "") {
  const of = name ? ` in “${name}”` : "";
  if (!rows.length) return `No face found${of}.`;
  const what = rows.map((r) => `${r.label}${r.score === null ? "" : ` ${percent(r.score)}`}`).join(", ");
  return `${rows.length} face${rows.length === 1 ? "" : "s"} found${of}: ${what}.`;
}

/** `{label: frac}` as `[[label, frac], …]`, largest first, zeros left out. */
export function sortedShare(share) {
  if (!share || typeof share !== "object") return [];
  return Object.entries(share)
    .filter(([, v]) => isNum(v) && v > 0)
    .sort((a, b) => b[1] - a[1]);
}

/** "happy 83%, neutral 12%, sad 5%": the `top` largest shares. */
export function shareText(share, top = 3) {
  return sortedShare(share).slice(0, top).map(([l, v]) => `${l} ${percent(v)}`).join(", ");
}

/**
 * The summary of a video job, ready to show: `{duration, frames, faces: [{id, dominant,
 * dominantShare, frames, from, to, seen, share, shareText}], overall: [[label, frac]],
 * overallText, error, more}`. Faces are listed longest seen first, at most `limit`
 * (`more` says how many were left out).
 */
export function summaryView(summary, limit = 12) {
  const s = summary && typeof summary === "object" ? summary : {};
  const all = (Array.isArray(s.faces) ? s.faces : [])
    .filter((f) => f && typeof f === "object")
    .map((f) => {
      const share = f.share && typeof f.share === "object" ? f.share : {};
      const dominant = typeof f.dominant === "string" ? f.dominant : (sortedShare(share)[0] || ["?"])[0];
      const from = isNum(f.first_s) ? f.first_s : null;
      const to = isNum(f.last_s) ? f.last_s : null;
      return {
        id: f.id,
        dominant,
        dominantShare: isNum(share[dominant]) ? share[dominant] : null,
        frames: isNum(f.frames) ? f.frames : 0,
        from,
        to,
        seen: from !== null && to !== null ? `${formatSeconds(from)} – ${formatSeconds(to)}` : "",
        share,
        shareText: shareText(share),
      };
    })
    .sort((a, b) => b.frames - a.frames || Number(a.id) - Number(b.id));
  const overall = sortedShare(s.share);
  return {
    duration: isNum(s.duration_s) ? formatSeconds(s.duration_s) : "",
    frames: isNum(s.frames_analysed) ? s.frames_analysed : null,
    faces: all.slice(0, limit),
    more: Math.max(0, all.length - limit),
    total: all.length,
    overall,
    overallText: shareText(s.share, 7),
    error: typeof s.error === "string" ? s.error : null,
  };
}

/** One sentence about a summary, for the live region when a job is done. */
export function summarySentence(view) {
  const faces = view.total === 1 ? "1 face" : `${view.total} faces`;
  const frames = view.frames === null ? "" : `, ${view.frames} frames analysed`;
  const main = view.overall.length ? `; mostly ${view.overall[0][0]} (${percent(view.overall[0][1])})` : "";
  return `${faces}${frames}${main}.`;
}
