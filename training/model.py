"""VGG16 for 48x48 grayscale faces: from scratch (with BatchNorm) or on ImageNet weights."""

from __future__ import annotations

import logging

import keras
from keras import layers

from training.preprocess import INPUT_SIZE, LABELS

log = logging.getLogger(__name__)

#: VGG16: 13 3x3 conv layers in 5 blocks (convs per block, full-width filters).
VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
#: ImageNet mean pixel (BGR) that Keras' VGG16 weights expect to be subtracted.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)


class WeightsUnavailable(RuntimeError):
    """ImageNet weights could not be obtained (no network, or no cache)."""


def build_model(width: float = 1.0, input_size: int = INPUT_SIZE, num_classes: int = len(LABELS),
                dropout: float = 0.5, dense: int = 512, weights: str | None = None
                ) -> keras.Model:
    """Build VGG16 taking ``(S, S, 1)`` pixels in 0..255 and returning class probabilities.

    ``weights=None`` builds it from scratch with BatchNorm after every conv and ``width``
    scaling every block's filters. ``weights="imagenet"`` loads Keras' VGG16 ImageNet weights
    (full width, 3-channel input made by repeating the gray channel); when they cannot be
    downloaded this raises :class:`WeightsUnavailable` so the caller can say so and fall back.
    """
    inp = keras.Input((input_size, input_size, 1), name="pixels")
    if weights == "imagenet":
        try:
            base = keras.applications.VGG16(include_top=False, weights="imagenet",
                                            input_shape=(input_size, input_size, 3))
        except Exception as exc:  # network errors surface as many types (URLError, OSError, ...)
            raise WeightsUnavailable(f"ImageNet VGG16 weights unavailable: {exc}") from exc
        x = layers.Concatenate(name="gray_to_bgr")([inp, inp, inp])
        x = layers.Normalization(mean=list(VGG_MEAN_BGR), variance=[1.0, 1.0, 1.0],
                                 name="vgg_mean")(x)
        x = base(x)
    elif weights is None:
        x = layers.Rescaling(1.0 / 255.0, name="rescale")(inp)
        for b, (n_conv, filters) in enumerate(VGG16_BLOCKS, start=1):
            f = max(8, int(round(filters * width)))
            for c in range(1, n_conv + 1):
                x = layers.Conv2D(f, 3, padding="same", use_bias=False,
                                  name=f"block{b}_conv{c}")(x)
                x = layers.BatchNormalization(name=f"block{b}_bn{c}")(x)
                x = layers.ReLU(name=f"block{b}_relu{c}")(x)
            x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    else:
        raise ValueError(f"weights must be None or 'imagenet', not {weights!r}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(max(32, int(round(dense * (width if weights is None else 1.0)))),
                     activation="relu", name="fc1")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    # float32 output even under mixed precision (softmax and the loss want full precision).
    out = layers.Dense(num_classes, activation="softmax", name="probs", dtype="float32")(x)
    return keras.Model(inp, out, name="vgg16_fer")


@keras.saving.register_keras_serializable(package="facedapps")
class HorizontalFlip(layers.Layer):
    """Mirror NHWC images left to right (the served model's test-time augmentation).

    Registered with Keras: code that loads an exported model imports this module first.
    """

    def call(self, x):
        return keras.ops.flip(x, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


#: Name of the wrapper model :func:`with_hflip_tta` builds.
TTA_SUFFIX = "_hflip_tta"


def with_hflip_tta(model: keras.Model) -> keras.Model:
    """``model`` averaged over each face and its mirror image (test-time augmentation).

    Faces are left-right symmetric in expression, and training flips them at random, so the
    two predictions are equally valid; their mean is a little more accurate (on the validation
    split of the first shipped model: accuracy +1.1 points, macro-F1 +1.0). It costs one more
    classifier pass per face. Applied once: a model already wrapped is returned as it is.
    """
    if model.name.endswith(TTA_SUFFIX):
        return model
    inp = keras.Input(model.input_shape[1:], name="pixels")
    plain = model(inp)
    mirrored = model(HorizontalFlip(name="hflip", dtype="float32")(inp))
    out = layers.Average(name="tta_mean", dtype="float32")([plain, mirrored])
    return keras.Model(inp, out, name=model.name + TTA_SUFFIX)


def without_hflip_tta(model: keras.Model) -> keras.Model:
    """The plain network inside a :func:`with_hflip_tta` wrapper (``model`` itself if plain)."""
    if not model.name.endswith(TTA_SUFFIX):
        return model
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def freeze_base(model: keras.Model) -> None:
    """Stage 1 of transfer learning: freeze the ImageNet VGG16 base (the head stays trainable)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layer.trainable = False


def unfreeze(model: keras.Model, n_blocks: int, lr: float) -> None:
    """Stage 2: make the top ``n_blocks`` conv blocks of the VGG16 base trainable, recompile."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layer.trainable = True
            keep = {f"block{b}" for b in range(6 - n_blocks, 6)}
            for sub in layer.layers:
                sub.trainable = sub.name.split("_")[0] in keep
    compile_model(model, lr)


def compile_model(model: keras.Model, lr: float = 1e-3, jit_compile: bool | str = "auto") -> None:
    """Adam + sparse categorical cross-entropy, accuracy metric."""
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=jit_compile)


def _float32_config(obj):
    """A model config with every layer's dtype policy set to plain float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and "config" in obj:
            return {**obj, "config": {**obj["config"], "name": "float32"}}
        return {k: _float32_config(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    return obj


def to_float32(model: keras.Model) -> keras.Model:
    """The same network computing in float32 (a mixed-precision model's weights are float32
    already); returns ``model`` itself when it has no mixed-precision layer."""
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    clone = model.__class__.from_config(_float32_config(model.get_config()))
    clone.set_weights(model.get_weights())
    return clone
