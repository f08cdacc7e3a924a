"""VGG16 for 48x48 grayscale faces: from scratch (with BatchNorm) or on ImageNet weights."""

from __future__ import annotations

import logging

import keras
from keras import layers

from core.layers import HorizontalFlip, Shift, SmoothedSparseCrossentropy
from core.preprocess import INPUT_SIZE, LABELS

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


#: Name suffix of every test-time-augmentation wrapper :func:`with_tta` builds.
TTA_SUFFIX = "_tta"


def tta_views(shift: int = 0) -> list[tuple[bool, int, int]]:
    """The ``(mirror, dx, dy)`` views :func:`with_tta` averages: the face and its mirror image,
    and with ``shift`` > 0 both of them also moved ``shift`` pixels left, right, up and down
    (10 views)."""
    moves = [(0, 0)]
    if shift:
        moves += [(shift, 0), (-shift, 0), (0, shift), (0, -shift)]
    return [(mirror, dx, dy) for dx, dy in moves for mirror in (False, True)]


def tta_name(shift: int = 0) -> str:
    """How the metadata names the :func:`with_tta` averaging (``hflip-average`` for mirror
    only, the first shipped models' name)."""
    return "hflip-average" if not shift else f"hflip+shift{shift}-average"


def with_tta(model: keras.Model, shift: int = 0) -> keras.Model:
    """``model`` averaged over the :func:`tta_views` of each face (test-time augmentation).

    Faces are left-right symmetric in expression, and training flips and shifts them at
    random, so every view's prediction is equally valid; their mean is more accurate (on the
    validation split of the first shipped model: mirror +1.1 points of accuracy; mirror plus
    3-pixel shifts on the x0.375 model +3.1 over the plain network). Each view costs one more
    classifier pass per face. Applied once: a model already wrapped is returned as it is.
    """
    if is_tta(model):
        return model
    inp = keras.Input(model.input_shape[1:], name="pixels")
    outs: list = []
    for mirror, dx, dy in tta_views(shift):
        x = inp
        if mirror:
            x = HorizontalFlip(name=f"hflip_{len(outs)}" if shift else "hflip", dtype="float32")(x)
        if dx or dy:
            x = Shift(dx, dy, name=f"shift_{len(outs)}", dtype="float32")(x)
        outs.append(model(x))
    out = layers.Average(name="tta_mean", dtype="float32")(outs)
    suffix = "_hflip" if not shift else f"_hflip_shift{shift}"
    return keras.Model(inp, out, name=model.name + suffix + TTA_SUFFIX)


def is_tta(model: keras.Model) -> bool:
    """Whether ``model`` is a :func:`with_tta` wrapper."""
    return model.name.endswith(TTA_SUFFIX) and any(
        isinstance(layer, keras.Model) for layer in model.layers)


def without_tta(model: keras.Model) -> keras.Model:
    """The network inside a :func:`with_tta` wrapper (``model`` itself if not wrapped)."""
    if not is_tta(model):
        return model
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


#: Name prefix of the models :func:`ensemble` builds.
ENSEMBLE_NAME = "vgg16_fer_ensemble"


def ensemble(models: list[keras.Model]) -> keras.Model:
    """One model averaging the class probabilities of several plain networks (independently
    trained ones disagree on different faces, so their mean is more accurate than either)."""
    if len(models) < 2:
        raise ValueError("an ensemble needs at least two models")
    shapes = {tuple(m.input_shape[1:]) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members take different inputs: {sorted(shapes)}")
    inp = keras.Input(shapes.pop(), name="pixels")
    outs = [keras.Model(m.input, m.output, name=f"member{i}")(inp)
            for i, m in enumerate(models)]
    out = layers.Average(name="ensemble_mean", dtype="float32")(outs)
    return keras.Model(inp, out, name=f"{ENSEMBLE_NAME}{len(models)}")


def members(model: keras.Model) -> list[keras.Model]:
    """The plain networks of an :func:`ensemble` (``[model]`` for a single network)."""
    if not model.name.startswith(ENSEMBLE_NAME):
        return [model]
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]


def freeze_base(model: keras.Model) -> None:
    """Stage 1 of transfer learning: freeze the ImageNet VGG16 base (the head stays trainable)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layer.trainable = False


def unfreeze(model: keras.Model, n_blocks: int, lr: float, label_smoothing: float = 0.0
             ) -> None:
    """Stage 2: make the top ``n_blocks`` conv blocks of the VGG16 base trainable, recompile."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layer.trainable = True
            keep = {f"block{b}" for b in range(6 - n_blocks, 6)}
            for sub in layer.layers:
                sub.trainable = sub.name.split("_")[0] in keep
    compile_model(model, lr, label_smoothing=label_smoothing)


def compile_model(model: keras.Model, lr: float = 1e-3, jit_compile: bool | str = "auto",
                  label_smoothing: float = 0.0, dense_targets: bool = False) -> None:
    """Adam + sparse categorical cross-entropy (label-smoothed when asked), accuracy metric.
    ``dense_targets``: the targets are probability vectors (distillation, smoothing included):
    plain categorical cross-entropy."""
    if dense_targets:
        loss: str | keras.losses.Loss = "categorical_crossentropy"
    else:
        loss = (SmoothedSparseCrossentropy(label_smoothing) if label_smoothing
                else "sparse_categorical_crossentropy")
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss,
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
