// Camera access: the constraints we ask for, a fallback for cameras that cannot meet them, and
// a plain-language message for each getUserMedia failure.

export const CAMERA_CONSTRAINTS = Object.freeze({
  audio: false,
  video: {
    width: { ideal: 640, max: 640 },
    height: { ideal: 480, max: 480 },
    frameRate: { ideal: 15 },
  },
});

/** What to tell the user when getUserMedia rejects with `err`. */
export function cameraMessage(err) {
  const name = (err && err.name) || "";
  if (name === "NotAllowedError" || name === "PermissionDeniedError" || name === "SecurityError") {
    return "Camera access was denied. Allow the camera for this site (address bar) and click Start again.";
  }
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return "No suitable camera was found.";
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
    return "The camera could not be started. Is another application using it?";
  }
  return `Could not start the camera: ${name || "error"}${err && err.message ? `: ${err.message}` : ""}`;
}

/** Open the camera through `mediaDevices` (navigator.mediaDevices in the page). */
export async function openCamera(mediaDevices) {
  try {
    return await mediaDevices.getUserMedia(CAMERA_CONSTRAINTS);
  } catch (err) {
    // A camera that cannot meet the size limits: take what it has (the server scales it).
    if (err && err.name === "OverconstrainedError") {
      return mediaDevices.getUserMedia({ audio: false, video: true });
    }
    throw err;
  }
}

/** Stop every track of `stream` (null is fine): the camera light goes off. */
export function stopTracks(stream) {
  if (!stream) return;
  for (const track of stream.getTracks()) track.stop();
}
