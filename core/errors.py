"""The named errors of the shared core (the server and the CLI turn them into clear messages)."""


class ModelError(RuntimeError):
    """A model folder is missing, incomplete or unreadable."""


class ImageError(ValueError):
    """An uploaded or streamed image is not a usable JPEG/PNG/WebP image.

    ``status`` is the HTTP status an upload answers with (400, 413 or 415); the message is
    written for the person who sent the image.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
