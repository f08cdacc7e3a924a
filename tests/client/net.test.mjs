// URL and HTTP-error helpers (client/net.js) and the timeline's URLs built on them.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  TransportError, errorField, fetchJson, httpError, httpStatusText, withToken, wsUrl,
} from "../../client/net.js";
import { timelineUrl } from "../../client/timeline.js";

const json = (status, body) => new Response(JSON.stringify(body), {
  status, headers: { "Content-Type": "application/json" } });
const text = (status, body) => new Response(body, { status });

test("withToken adds an encoded token with ? or &", () => {
  assert.equal(withToken("/offer", ""), "/offer");
  assert.equal(withToken("/offer", null), "/offer");
  assert.equal(withToken("/offer", undefined), "/offer");
  assert.equal(withToken("/offer", "abc"), "/offer?token=abc");
  assert.equal(withToken("/x?a=1", "abc"), "/x?a=1&token=abc");
  assert.equal(withToken("/config", "a b&c=d/é"), "/config?token=a%20b%26c%3Dd%2F%C3%A9");
});

test("wsUrl follows the page's scheme and host", () => {
  assert.equal(wsUrl("/ws/stream", "", { protocol: "http:", host: "127.0.0.1:8080" }),
               "ws://127.0.0.1:8080/ws/stream");
  assert.equal(wsUrl("/ws/stream", "t k", { protocol: "https:", host: "example.org" }),
               "wss://example.org/ws/stream?token=t%20k");
});

test("timeline URLs encode the session id and carry the token", () => {
  assert.equal(timelineUrl("ab/c", "json", ""), "/api/sessions/ab%2Fc/timeline.json");
  assert.equal(timelineUrl("s1", "csv", "tok"), "/api/sessions/s1/timeline.csv?token=tok");
});

test("errorField: the JSON error text, '' without one, null for non-JSON", async () => {
  assert.equal(await errorField(json(404, { error: "no such session" })), "no such session");
  assert.equal(await errorField(json(500, { detail: "x" })), "");
  assert.equal(await errorField(text(502, "<html>Bad gateway</html>")), null);
});

test("httpStatusText", async () => {
  assert.equal(await httpStatusText(json(404, { error: "no such session" })), "HTTP 404: no such session");
  assert.equal(await httpStatusText(text(500, "oops")), "HTTP 500");
});

test("httpError: capacity is fatal and keeps the server's words", async () => {
  const err = await httpError(json(503, { error: "server at capacity (16 sessions); try again later" }),
                              "POST /offer");
  assert.ok(err instanceof TransportError);
  assert.equal(err.message, "Server at capacity (16 sessions); try again later");
  assert.equal(err.fatal, true);
  assert.equal(err.status, 503);
  const bare = await httpError(text(503, ""), "POST /offer");
  assert.equal(bare.message, "Server at capacity; try again later");
});

test("httpError: 401/403 are fatal 'Not authorised'", async () => {
  const err = await httpError(json(401, { error: "invalid access token" }), "POST /offer");
  assert.equal(err.message, "Not authorised: invalid access token");
  assert.equal(err.fatal, true);
  const bare = await httpError(json(403, {}), "POST /offer");
  assert.equal(bare.message, "Not authorised: a valid access token is required");
});

test("httpError: other statuses may fall back; non-JSON bodies are quoted (200 chars)", async () => {
  const err = await httpError(text(502, "x".repeat(500)), "POST /offer");
  assert.equal(err.fatal, false);
  assert.equal(err.message, `POST /offer failed (HTTP 502): ${"x".repeat(200)}`);
  const plain = await httpError(json(500, { detail: 1 }), "POST /offer");
  assert.equal(plain.message, "POST /offer failed (HTTP 500)");
});

test("fetchJson: JSON on 2xx, an error naming the status otherwise", async () => {
  const calls = [];
  const ok = async (url, init) => { calls.push([url, init]); return json(200, { a: 1 }); };
  assert.deepEqual(await fetchJson("/config", ok), { a: 1 });
  assert.deepEqual(calls, [["/config", { cache: "no-store" }]]);
  await assert.rejects(fetchJson("/config", async () => json(500, {})), /HTTP 500/);
});
