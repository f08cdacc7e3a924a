"""The few named errors of the server."""


class ServeError(RuntimeError):
    """The server cannot start (bad configuration, missing model, port in use)."""


class ModelError(ServeError):
    """A model folder is missing, incomplete or unreadable."""


class ImageError(ValueError):
    """An uploaded or streamed image is not a usable JPEG/PNG."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class CapacityError(RuntimeError):
    """No room for another session."""
