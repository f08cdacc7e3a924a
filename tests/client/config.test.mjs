// /config parsing and loading (client/config.js).
import { test } from "node:test";
import assert from "node:assert/strict";

import { DEFAULT_CONFIG, chosenTransport, fetchConfig, normalizeConfig } from "../../client/config.js";

test("missing or odd configs give the defaults", () => {
  for (const c of [null, undefined, 5, "x", {}]) assert.deepEqual(normalizeConfig(c), DEFAULT_CONFIG);
});

test("valid fields are taken", () => {
  const c = normalizeConfig({
    ice_servers: [{ urls: "stun:stun.example.org" },
                  { urls: ["turn:t.example.org"], username: "u", credential: "p", extra: 1 }],
    transport: "ws", webrtc_timeout_ms: "1500", access_token_required: true,
  });
  assert.deepEqual(c, {
    ice_servers: [{ urls: "stun:stun.example.org" },
                  { urls: ["turn:t.example.org"], username: "u", credential: "p" }],
    transport: "ws", webrtc_timeout_ms: 1500, access_token_required: true,
  });
});

test("invalid fields fall back one by one", () => {
  const c = normalizeConfig({
    ice_servers: [null, { urls: 5 }, { username: "x" }, { urls: "stun:ok", username: 3 }],
    transport: "carrier-pigeon", webrtc_timeout_ms: -1, access_token_required: "yes",
  });
  assert.deepEqual(c.ice_servers, [{ urls: "stun:ok" }]);
  assert.equal(c.transport, "auto");
  assert.equal(c.webrtc_timeout_ms, 5000);
  assert.equal(c.access_token_required, false);
  assert.equal(normalizeConfig({ webrtc_timeout_ms: "abc" }).webrtc_timeout_ms, 5000);
});

test("the defaults cannot be changed through a loaded config", () => {
  const c = normalizeConfig({});
  c.transport = "ws";
  assert.equal(DEFAULT_CONFIG.transport, "auto");
  assert.ok(Object.isFrozen(DEFAULT_CONFIG));
});

test("?transport= wins when it is a known mode", () => {
  const cfg = { ...DEFAULT_CONFIG, transport: "webrtc" };
  assert.equal(chosenTransport("ws", cfg), "ws");
  assert.equal(chosenTransport("auto", cfg), "auto");
  assert.equal(chosenTransport(null, cfg), "webrtc");
  assert.equal(chosenTransport("bogus", cfg), "webrtc");
});

test("fetchConfig asks /config with the token and normalizes the answer", async () => {
  const urls = [];
  const fetchFn = async (url) => {
    urls.push(url);
    return new Response(JSON.stringify({ transport: "ws", access_token_required: true }));
  };
  const { config, error } = await fetchConfig("s3cret", fetchFn);
  assert.equal(error, null);
  assert.deepEqual(urls, ["/config?token=s3cret"]);
  assert.equal(config.transport, "ws");
  assert.equal(config.access_token_required, true);
});

test("fetchConfig never throws: defaults plus the error on failure", async () => {
  const down = await fetchConfig(null, async () => { throw new TypeError("Failed to fetch"); });
  assert.deepEqual(down.config, DEFAULT_CONFIG);
  assert.match(down.error.message, /Failed to fetch/);
  const http = await fetchConfig(null, async () => new Response("nope", { status: 500 }));
  assert.equal(http.error.message, "HTTP 500");
  const garbage = await fetchConfig(null, async () => new Response("not json"));
  assert.ok(garbage.error instanceof Error);
  assert.deepEqual(garbage.config, DEFAULT_CONFIG);
});
