// The page's settings from GET /config, checked field by field so a partial or odd answer still
// leaves a usable configuration. Pure apart from the fetch, which is injectable.

import { fetchJson, withToken } from "./net.js";

export const DEFAULT_CONFIG = Object.freeze({
  ice_servers: [],
  transport: "auto",
  webrtc_timeout_ms: 5000,
  access_token_required: false,
});

/** Transport modes: "auto" tries WebRTC, then the WebSocket fallback. */
export const TRANSPORTS = Object.freeze(["auto", "webrtc", "ws"]);

/** A complete configuration from `c`: unknown or malformed fields fall back to the defaults. */
export function normalizeConfig(c) {
  const out = { ...DEFAULT_CONFIG };
  if (!c || typeof c !== "object") return out;
  if (Array.isArray(c.ice_servers)) {
    out.ice_servers = c.ice_servers
      .filter((s) => s && (typeof s.urls === "string" || Array.isArray(s.urls)))
      .map((s) => {
        const server = { urls: s.urls };
        if (typeof s.username === "string") server.username = s.username;
        if (typeof s.credential === "string") server.credential = s.credential;
        return server;
      });
  }
  if (TRANSPORTS.includes(c.transport)) out.transport = c.transport;
  const t = Number(c.webrtc_timeout_ms);
  if (Number.isFinite(t) && t > 0) out.webrtc_timeout_ms = t;
  out.access_token_required = c.access_token_required === true;
  return out;
}

/** The transport to use: `?transport=` in the page's link wins over the server's setting. */
export function chosenTransport(forced, config) {
  return TRANSPORTS.includes(forced) ? forced : config.transport;
}

/**
 * GET /config; never throws. Returns `{config, error}`: on failure the defaults and the error,
 * so the page can still start (a server without /config, or one briefly unreachable).
 */
export async function fetchConfig(token, fetchFn = globalThis.fetch) {
  try {
    return { config: normalizeConfig(await fetchJson(withToken("/config", token), fetchFn)), error: null };
  } catch (err) {
    return { config: { ...DEFAULT_CONFIG }, error: err instanceof Error ? err : new Error(String(err)) };
  }
}
