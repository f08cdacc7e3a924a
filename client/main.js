// FaceDApps page bootstrap: finds the elements, hands them to the PageController (which owns all
// state: camera on Start, WebRTC transport with a WebSocket fallback, overlay, bars, readout,
// live timeline, and the "Analyse a photo or video" panel) and publishes its state for tests and
// tools as window.facedapps; the state name is also on <body data-state>.

import { PageController } from "./controller.js";

const $ = (id) => document.getElementById(id);

const ui = {
  body: document.body,
  start: $("start"),
  stop: $("stop"),
  mirror: $("mirror"),
  tokenField: $("token-field"),
  token: $("token"),
  status: $("status"),
  error: $("error"),
  announce: $("announce"),
  video: $("video"),
  overlay: $("overlay"),
  bars: $("bars"),
  rTransport: $("r-transport"),
  rFps: $("r-fps"),
  rLatency: $("r-latency"),
  rRtt: $("r-rtt"),
  rFaces: $("r-faces"),
  timelineChart: $("timeline-chart"),
  timelineFace: $("timeline-face"),
  timelineCsv: $("timeline-csv"),
  timelineJson: $("timeline-json"),
  timelineNote: $("timeline-note"),
  timelineLegend: $("timeline-legend"),
  // Analyse a photo or video (analyzer.js)
  analyze: $("analyze"),
  analyzeDrop: $("analyze-drop"),
  analyzeFile: $("analyze-file"),
  analyzeClear: $("analyze-clear"),
  analyzeStatus: $("analyze-status"),
  analyzeError: $("analyze-error"),
  uploadRow: $("upload-row"),
  uploadBar: $("upload-progress"),
  uploadText: $("upload-pct"),
  jobRow: $("job-row"),
  jobBar: $("job-progress"),
  jobText: $("job-pct"),
  analysis: $("analysis"),
  analysisName: $("analysis-name"),
  photoResult: $("photo-result"),
  photo: $("photo"),
  photoCanvas: $("photo-overlay"),
  photoFaces: $("photo-faces"),
  videoResult: $("video-result"),
  jobVideo: $("job-video"),
  jobChart: $("job-chart"),
  jobFacts: $("job-facts"),
  jobShare: $("job-share"),
  jobFacesTable: $("job-faces-table"),
  jobFaces: $("job-faces"),
  jobMore: $("job-more"),
  jobDownloads: $("job-downloads"),
};

const controller = new PageController(ui, { params: new URLSearchParams(location.search) });
window.facedapps = controller.app;
controller.init(window);
