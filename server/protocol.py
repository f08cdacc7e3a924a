"""The result message (one schema for the data channel, ``/ws`` and ``/ws/stream``) and the
other small messages; the face objects come from ``core.pipeline.face_dict``."""

from __future__ import annotations

import json
from typing import Any

from core.pipeline import face_dict

__all__ = ["dumps", "error_message", "face_dict", "hello_message", "result_message"]


def result_message(session: str, frame: int, width: int, height: int, latency_ms: float,
                   faces: list[dict]) -> dict:
    """The interface's result message."""
    return {"type": "result", "session": session, "frame": int(frame), "width": int(width),
            "height": int(height), "latency_ms": round(float(latency_ms), 2), "faces": faces}


def hello_message(session: str | None = None) -> dict:
    """First message on a WebSocket: the stream's session, or (on ``/ws``) that the
    subscription is live, so a client knows no result published from now on is missed."""
    return {"type": "hello", "session": session}


def dumps(msg: dict) -> str:
    return json.dumps(msg, separators=(",", ":"))


def error_message(text: str) -> dict:
    return {"type": "error", "error": text}


#: What a WebSocket client that sends faster than the server's message rate is told.
TOO_MANY_MESSAGES = "too many messages; slow down"


async def close_with_error(ws: Any, text: str, code: int, reason: bytes) -> None:
    """Tell a WebSocket client why in an error message, then close it with ``code`` (a browser
    can read neither an HTTP status on an upgrade nor much of a close reason)."""
    await ws.send_str(dumps(error_message(text)))
    await ws.close(code=code, message=reason)
