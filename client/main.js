// FaceDApps page bootstrap: finds the elements, hands them to the PageController (which owns all
// state: camera on Start, WebRTC transport with a WebSocket fallback, overlay, bars, readout,
// live timeline) and publishes its state for tests and tools as window.facedapps; the state name
// is also on <body data-state>.

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
};

const controller = new PageController(ui, { params: new URLSearchParams(location.search) });
window.facedapps = controller.app;
controller.init(window);
