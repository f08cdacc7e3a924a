// HTTP and URL helpers shared by the transports, the config loader and the timeline. No DOM
// access at import time, so the pure parts can be unit-tested in Node.

/** A transport start that failed; `fatal` means "do not try the WebSocket fallback". */
export class TransportError extends Error {
  constructor(message, { status = 0, fatal = false, timeout = false } = {}) {
    super(message);
    this.name = "TransportError";
    this.status = status;
    this.fatal = fatal;
    this.timeout = timeout;
  }
}

/** Build a same-origin URL with an optional `token` query parameter. */
export function withToken(path, token) {
  if (!token) return path;
  const sep = path.includes("?") ? "&" : "?";
  return `${path}${sep}token=${encodeURIComponent(token)}`;
}

/** `ws(s)://host/path?token=…` on the page's origin (`loc` is injectable for tests). */
export function wsUrl(path, token, loc = globalThis.location) {
  const proto = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${loc.host}${withToken(path, token)}`;
}

/**
 * The server's `{"error": "…"}` text of a response: "" for JSON without that field, null when
 * the body is not JSON at all (a proxy's error page, say).
 */
export async function errorField(resp) {
  try {
    const body = await resp.clone().json();
    return body && typeof body.error === "string" ? body.error : "";
  } catch (_) {
    return null;
  }
}

/** `HTTP <status>` plus the server's error text, for short notes (timeline). */
export async function httpStatusText(resp) {
  const text = await errorField(resp);
  return text ? `HTTP ${resp.status}: ${text}` : `HTTP ${resp.status}`;
}

/** Turn an HTTP error response into a TransportError carrying the server's `error` text. */
export async function httpError(resp, what) {
  let text = await errorField(resp);
  if (text === null) {
    // Not JSON (a proxy's page, say): show the start of the body.
    text = "";
    try { text = (await resp.clone().text()).slice(0, 200); } catch (_) { /* ignore */ }
  }
  const status = resp.status;
  let message;
  if (status === 503) {
    message = /capacity/i.test(text)
      ? text.charAt(0).toUpperCase() + text.slice(1)
      : `Server at capacity${text ? `: ${text}` : "; try again later"}`;
  }
  else if (status === 401 || status === 403) message = `Not authorised: ${text || "a valid access token is required"}`;
  else message = `${what} failed (HTTP ${status})${text ? `: ${text}` : ""}`;
  return new TransportError(message, { status, fatal: status === 503 || status === 401 || status === 403 });
}

/** GET `url` as JSON, never cached; throws `Error("HTTP <status>")` on a non-2xx answer. */
export async function fetchJson(url, fetchFn = globalThis.fetch) {
  const resp = await fetchFn(url, { cache: "no-store" });
  if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
  return resp.json();
}
