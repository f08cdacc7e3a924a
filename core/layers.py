"""The Keras custom objects of exported models and training checkpoints, in one place.

Loading code passes :data:`CUSTOM_OBJECTS` explicitly (see :func:`core.model_dir.load_keras`), so
a model loads in a fresh process whatever was imported before. Only this module (with
``core.runtimes`` and ``training``) imports Keras.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="facedapps")
class HorizontalFlip(layers.Layer):
    """Mirror NHWC images left to right (the served model's test-time augmentation).

    Listed in :data:`CUSTOM_OBJECTS`, which every loader passes to Keras.
    """

    def call(self, x):
        return keras.ops.flip(x, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="facedapps")
class Shift(layers.Layer):
    """Shift NHWC images by ``dx`` columns and ``dy`` rows (output pixel ``(i, j)`` is input
    pixel ``(i + dy, j + dx)``), reflecting at the border like the training-time
    ``RandomTranslation(fill_mode="reflect")``."""

    def __init__(self, dx: int = 0, dy: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.dx, self.dy = int(dx), int(dy)

    def call(self, x):
        p = max(abs(self.dx), abs(self.dy))
        if not p:
            return x
        h, w = x.shape[1], x.shape[2]
        padded = keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")
        return padded[:, p + self.dy:p + self.dy + h, p + self.dx:p + self.dx + w, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dx": self.dx, "dy": self.dy}


@keras.saving.register_keras_serializable(package="facedapps")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with label smoothing: the target puts ``1 - smoothing``
    on the label and ``smoothing`` spread evenly over all classes (Keras' sparse loss has no
    smoothing). Registered so that checkpoints compiled with it load again (``--resume``)."""

    def __init__(self, smoothing: float = 0.1, name: str = "smoothed_sparse_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), not {smoothing}")
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        ops = keras.ops
        k = ops.shape(y_pred)[-1]
        target = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), k)
        target = target * (1.0 - self.smoothing) + self.smoothing / ops.cast(k, "float32")
        return keras.losses.categorical_crossentropy(target, ops.cast(y_pred, "float32"))

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


#: Every custom class a saved model or checkpoint may name, under its registered and plain names.
CUSTOM_OBJECTS: dict[str, type] = {
    name: cls
    for cls in (HorizontalFlip, Shift, SmoothedSparseCrossentropy)
    for name in (f"facedapps>{cls.__name__}", cls.__name__)
}
