// The messages the server sends on the data channel and on /ws/stream, as pure functions:
//   {"type":"result","session","frame","width","height","latency_ms",
//    "faces":[{"id","box":[x,y,w,h],"label","score","uncertain","scores":{label: prob}}]}
//   {"type":"error","error"}   {"type":"hello","session"}   {"type":"ping"} / {"type":"pong"}
// Both transports parse with parseMessage so they agree on what a valid message is.

/** Text of a data-channel / WebSocket payload (string or bytes); null when it cannot be read. */
export function decodeText(data) {
  if (typeof data === "string") return data;
  try {
    return new TextDecoder().decode(data);
  } catch (_) {
    return null;
  }
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/**
 * One face with the fields the page uses checked: null when it has no usable box (nothing could
 * be drawn for it). Known fields of the wrong type are dropped; unknown fields are kept.
 */
export function normalizeFace(f) {
  if (!f || typeof f !== "object" || !Array.isArray(f.box) || f.box.length !== 4
      || !f.box.every(isNum)) return null;
  const face = { ...f, box: f.box.slice() };
  if (typeof face.label !== "string") delete face.label;
  if (!isNum(face.score)) delete face.score;
  if (typeof face.uncertain !== "boolean") delete face.uncertain;
  if (face.id !== undefined && !isNum(face.id) && typeof face.id !== "string") delete face.id;
  if (face.scores !== undefined) {
    if (face.scores && typeof face.scores === "object" && !Array.isArray(face.scores)) {
      // Key order is kept: it is the server's label order.
      face.scores = Object.fromEntries(Object.entries(face.scores).filter(([, p]) => isNum(p)));
    } else {
      delete face.scores;
    }
  }
  return face;
}

/**
 * A checked copy of a result message, or null when it is not one the page can use: `faces` must
 * be an array and `width`/`height` positive numbers (the boxes are in those pixels). Faces
 * without a usable box are left out.
 */
export function normalizeResult(msg) {
  if (!msg || typeof msg !== "object" || msg.type !== "result") return null;
  if (!Array.isArray(msg.faces) || !isNum(msg.width) || !isNum(msg.height)
      || msg.width <= 0 || msg.height <= 0) return null;
  const out = { ...msg, faces: msg.faces.map(normalizeFace).filter((f) => f !== null) };
  if (out.latency_ms !== undefined && !(isNum(out.latency_ms) && out.latency_ms >= 0)) delete out.latency_ms;
  if (out.session !== undefined && typeof out.session !== "string") delete out.session;
  if (out.frame !== undefined && !Number.isInteger(out.frame)) delete out.frame;
  return out;
}

/**
 * Parse one payload into a message object, or null when it is not JSON, not an object, or an
 * invalid result. `error` messages get `error: string|null`, `hello` gets `session: string|null`;
 * other types (ping, pong, unknown) are returned as they are for the caller to handle or ignore.
 */
export function parseMessage(data) {
  const text = decodeText(data);
  if (text === null) return null;
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (_) {
    return null;
  }
  if (!msg || typeof msg !== "object" || Array.isArray(msg)) return null;
  switch (msg.type) {
    case "result":
      return normalizeResult(msg);
    case "error":
      return { ...msg, error: typeof msg.error === "string" ? msg.error : null };
    case "hello":
      return { ...msg, session: typeof msg.session === "string" ? msg.session : null };
    default:
      return msg;
  }
}

/** The client's heartbeat (data channel); the server answers with PONG. */
export function pingMessage(t = Date.now()) {
  return { type: "ping", t };
}

/** The answer to a server ping. */
export const PONG = Object.freeze({ type: "pong" });
