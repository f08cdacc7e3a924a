"""The few named errors of the server, and the small vocabulary clients see.

Clients never get raw exception text: :func:`client_message` turns an exception into one of a
few fixed messages (or the message of one of our own errors, which are written for clients).
"""

from __future__ import annotations

from aiohttp import web

from core.errors import ImageError, ModelError


def json_error(status: int, text: str) -> web.Response:
    """The JSON error every route answers with: ``{"error": text}``."""
    return web.json_response({"error": text}, status=status)


class ServeError(RuntimeError):
    """The server cannot start (bad configuration, missing model, port in use)."""


class CapacityError(RuntimeError):
    """No room for another session, upload or frame right now (HTTP 503)."""


class BusyError(CapacityError):
    """The classifier queue is full: the work is refused instead of queued without bound."""


#: What a client is told when the remote inference tier (``serve --ray``) did not answer.
INFERENCE_UNAVAILABLE = "inference tier unavailable; the frame was not processed"


class InferenceUnavailable(CapacityError):
    """The remote inference tier did not classify a batch (unreachable, a replica died, or no
    answer in time): its frames fail with :data:`INFERENCE_UNAVAILABLE`, the session goes on."""

    def __init__(self, message: str = INFERENCE_UNAVAILABLE) -> None:
        super().__init__(message)


#: What a client is told when something of ours fails, by kind.
INTERNAL = "internal error; the frame was not processed"
SHUTTING_DOWN = "server shutting down"


def client_message(exc: BaseException) -> str:
    """The text a client may see for ``exc``: our own errors' messages, else a fixed one."""
    if isinstance(exc, (ImageError, CapacityError)):
        return str(exc)
    return INTERNAL


__all__ = ["BusyError", "CapacityError", "ImageError", "ModelError", "ServeError",
           "InferenceUnavailable", "client_message", "INFERENCE_UNAVAILABLE", "INTERNAL",
           "SHUTTING_DOWN"]
