"""The LiteRT (TFLite) interpreter, from the ``ai-edge-litert`` wheel (no TensorFlow import)."""

from __future__ import annotations

import os
from typing import Any


def make_interpreter(path: str | os.PathLike, threads: int) -> Any:
    """A LiteRT interpreter for the model file at ``path`` running on ``threads`` CPU threads."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=threads)
