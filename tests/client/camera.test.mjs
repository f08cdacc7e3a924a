// Camera messages and the constraint fallback (client/camera.js).
import { test } from "node:test";
import assert from "node:assert/strict";

import { CAMERA_CONSTRAINTS, cameraMessage, openCamera, stopTracks } from "../../client/camera.js";

const named = (name, message = "") => Object.assign(new Error(message), { name });

test("each getUserMedia failure gets a plain message", () => {
  assert.match(cameraMessage(named("NotAllowedError")), /denied/);
  assert.match(cameraMessage(named("SecurityError")), /denied/);
  assert.equal(cameraMessage(named("NotFoundError")), "No suitable camera was found.");
  assert.match(cameraMessage(named("NotReadableError")), /another application/);
  assert.equal(cameraMessage(named("WeirdError", "boom")), "Could not start the camera: WeirdError: boom");
  assert.equal(cameraMessage(null), "Could not start the camera: error");
});

test("openCamera asks for at most 640x480, audio off", async () => {
  const asked = [];
  const stream = { id: "s" };
  const got = await openCamera({ getUserMedia: async (c) => { asked.push(c); return stream; } });
  assert.equal(got, stream);
  assert.deepEqual(asked, [CAMERA_CONSTRAINTS]);
  assert.equal(CAMERA_CONSTRAINTS.audio, false);
  assert.equal(CAMERA_CONSTRAINTS.video.width.max, 640);
  assert.equal(CAMERA_CONSTRAINTS.video.height.max, 480);
});

test("a camera that cannot meet the limits is opened without them", async () => {
  const asked = [];
  const md = {
    getUserMedia: async (c) => {
      asked.push(c);
      if (asked.length === 1) throw named("OverconstrainedError");
      return "plain";
    },
  };
  assert.equal(await openCamera(md), "plain");
  assert.deepEqual(asked[1], { audio: false, video: true });
});

test("other failures are passed on (no second try)", async () => {
  let calls = 0;
  const md = { getUserMedia: async () => { calls += 1; throw named("NotAllowedError"); } };
  await assert.rejects(openCamera(md), { name: "NotAllowedError" });
  assert.equal(calls, 1);
});

test("stopTracks stops every track; null is fine", () => {
  const stopped = [];
  const stream = { getTracks: () => [1, 2].map((i) => ({ stop: () => stopped.push(i) })) };
  stopTracks(stream);
  stopTracks(null);
  assert.deepEqual(stopped, [1, 2]);
});
