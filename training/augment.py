"""On-the-fly augmentation for the training split only (Keras preprocessing layers)."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from training.config import AugmentConfig

__all__ = ["AugmentConfig", "build_augmenter", "mix_batch", "RandomAffine", "RandomCamera",
           "RandomErase"]


def build_augmenter(cfg: AugmentConfig, seed: int = 1234) -> keras.Sequential:
    """A Sequential of random layers; active only when called with ``training=True``."""
    mode = "horizontal_and_vertical" if cfg.hflip and cfg.vflip else (
        "horizontal" if cfg.hflip else ("vertical" if cfg.vflip else None))
    ls: list[layers.Layer] = []
    # float32 whatever the global (mixed) precision: augmentation feeds the input pipeline.
    if mode:
        ls.append(layers.RandomFlip(mode, seed=seed, dtype="float32"))
    if cfg.rotation_deg or cfg.zoom or cfg.shift:
        # One resampling for all three: chained Keras layers interpolate three times and blur
        # training faces well past the sharpness of the faces the model is tested on.
        ls.append(RandomAffine(cfg.rotation_deg, cfg.zoom, cfg.shift, seed=seed,
                               dtype="float32"))
    if cfg.brightness:
        ls.append(layers.RandomBrightness(cfg.brightness, value_range=(0.0, 255.0), seed=seed,
                                          dtype="float32"))
    if cfg.camera:
        ls.append(RandomCamera(cfg.camera, seed=seed, dtype="float32"))
    if cfg.erase:
        ls.append(RandomErase(cfg.erase, seed=seed, dtype="float32"))
    return keras.Sequential(ls, name="augment")


class RandomAffine(layers.Layer):
    """Rotation (up to ``rotation_deg`` either way), zoom (scale in ``1 +- zoom``) and shift (up to
    ``shift`` of the side, each axis) of NHWC batches, each image independently, in one bilinear
    resampling with reflected borders. Active only with ``training=True``."""

    def __init__(self, rotation_deg: float = 10.0, zoom: float = 0.1, shift: float = 0.1,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rotation_deg, self.zoom, self.shift = float(rotation_deg), float(zoom), float(shift)
        self.seed_gen = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        if not training:
            return x
        ops = keras.ops
        shape = ops.shape(x)
        b, h, w = shape[0], ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")

        def u(limit):
            return keras.random.uniform((b,), -limit, limit, seed=self.seed_gen)

        angle = u(np.deg2rad(self.rotation_deg))
        scale = 1.0 + u(self.zoom)  # > 1 samples a larger area: zooms out
        tx, ty = u(self.shift) * w, u(self.shift) * h
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        a0, a1 = scale * ops.cos(angle), -scale * ops.sin(angle)
        b0, b1 = scale * ops.sin(angle), scale * ops.cos(angle)
        # output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2)
        a2 = cx - a0 * cx - a1 * cy + tx
        b2 = cy - b0 * cx - b1 * cy + ty
        zeros = ops.zeros_like(a0)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return keras.ops.image.affine_transform(x, transform, interpolation="bilinear",
                                                fill_mode="reflect")

    def compute_output_shape(self, input_shape):
        return input_shape


class _PerImage(layers.Layer):
    """A random change applied to each image of an NHWC batch with probability ``rate``
    (:meth:`_randomise` draws and applies it); active only with ``training=True``."""

    #: What the rate is of, for the error message.
    what = "augmentation"

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{self.what} rate must be in [0, 1], not {rate}")
        self.rate = rate
        self.seed_gen = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        if not training or not self.rate:
            return x
        return self._randomise(x)

    def _randomise(self, x):
        raise NotImplementedError

    def per_image(self, x, lo: float, hi: float):
        """Uniform draws in ``[lo, hi)``, one per image of ``x``, shaped ``(B, 1, 1, 1)``."""
        return keras.random.uniform((keras.ops.shape(x)[0], 1, 1, 1), lo, hi,
                                    seed=self.seed_gen)

    def compute_output_shape(self, input_shape):
        return input_shape


class RandomErase(_PerImage):
    """Random erasing for NHWC batches of 0..255 pixels, each image independently: with
    probability ``rate`` one rectangle of 2-25% of its area (aspect ratio 0.3-3.3) becomes
    uniform noise. Active only with ``training=True``."""

    what = "erase"

    def _randomise(self, x):
        ops = keras.ops
        shape = ops.shape(x)
        h, w = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")

        def u(lo, hi):
            return self.per_image(x, lo, hi)

        area = u(0.02, 0.25) * h * w
        ratio = ops.exp(u(float(np.log(0.3)), float(np.log(3.3))))
        eh = ops.minimum(ops.sqrt(area * ratio), h)
        ew = ops.minimum(ops.sqrt(area / ratio), w)
        y0 = u(0.0, 1.0) * (h - eh)
        x0 = u(0.0, 1.0) * (w - ew)
        rows = ops.reshape(ops.arange(shape[1], dtype="float32"), (1, -1, 1, 1))
        cols = ops.reshape(ops.arange(shape[2], dtype="float32"), (1, 1, -1, 1))
        inside = ((rows >= y0) & (rows < y0 + eh) & (cols >= x0) & (cols < x0 + ew)
                  & (u(0.0, 1.0) < self.rate))
        noise = keras.random.uniform(shape, 0.0, 255.0, seed=self.seed_gen)
        return ops.where(inside, ops.cast(noise, x.dtype), x)


class RandomCamera(_PerImage):
    """Webcam conditions for NHWC batches of 0..255 pixels: with probability ``rate`` an image
    is degraded as a camera frame of a face is -- a lower resolution (the face seen at 16, 24 or
    32 px and scaled back up, or a horizontal motion blur of 5 px, or neither), a gamma in
    0.6-1.65 (low or strong light), contrast 0.6-1 and Gaussian noise of 0-8 grey levels.
    FER2013's crops are sharp, well-lit web photos; a face 60 px tall in a 640x480 H264 frame
    is not. Active only with ``training=True``."""

    SIZES = (16, 24, 32)

    what = "camera"

    def _randomise(self, x):
        ops = keras.ops
        shape = ops.shape(x)
        h, w = int(x.shape[1]), int(x.shape[2])

        def u(lo, hi):
            return self.per_image(x, lo, hi)

        variants = [x]
        for s in self.SIZES:
            small = ops.image.resize(x, (s, s), interpolation="bilinear", antialias=True)
            variants.append(ops.image.resize(small, (h, w), interpolation="bilinear"))
        kernel = ops.ones((1, 5, int(x.shape[3]), 1), dtype=x.dtype) / 5.0
        variants.append(ops.depthwise_conv(ops.pad(x, [[0, 0], [0, 0], [2, 2], [0, 0]],
                                                   mode="reflect"), kernel, padding="valid"))
        pick = ops.floor(u(0.0, float(len(variants))))
        y = variants[0]
        for i, v in enumerate(variants[1:], start=1):
            y = ops.where(pick == float(i), v, y)
        gamma = ops.exp(u(float(np.log(0.6)), float(np.log(1.65))))
        y = 255.0 * ops.power(ops.clip(y, 0.0, 255.0) / 255.0, gamma)
        mean = ops.mean(y, axis=(1, 2, 3), keepdims=True)
        y = mean + u(0.6, 1.0) * (y - mean)
        y = y + u(0.0, 8.0) * keras.random.normal(shape, seed=self.seed_gen)
        chosen = u(0.0, 1.0) < self.rate
        return ops.where(chosen, ops.clip(y, 0.0, 255.0), x)


def mix_batch(x, targets, weights=None, *, mixup: float = 0.0, cutmix: float = 0.0, gen=None):
    """Mixup and/or CutMix of one batch (TensorFlow tensors): ``x`` (N, H, W, C) images,
    ``targets`` (N, K) probability vectors, ``weights`` (N,) sample weights or None. Each image
    is mixed with another of the batch (a random permutation), by one weight ``lam`` for the
    batch: mixup blends whole images, ``lam * x + (1 - lam) * other``, with ``lam`` from
    Beta(mixup, mixup); CutMix pastes the other image's pixels into a random box of share about
    ``1 - lam`` (``lam`` from Beta(cutmix, cutmix)) and takes ``lam`` as the share of the image
    left outside the box. Targets and weights are mixed by the same ``lam``. With both rates
    set, each batch takes one of the two, half the time each. ``gen``: a
    ``tf.random.Generator`` (seeded, for reproducible runs)."""
    import tensorflow as tf

    if mixup < 0 or cutmix < 0:
        raise ValueError(f"mixup and cutmix alphas must be >= 0, not {mixup}, {cutmix}")
    if gen is None:
        gen = tf.random.Generator.from_non_deterministic_state()
    n = tf.shape(x)[0]
    perm = tf.argsort(gen.uniform([n]))
    seeds = gen.make_seeds(2)

    def beta(alpha: float):
        a = tf.random.stateless_gamma([], seed=seeds[:, 0], alpha=alpha)
        b = tf.random.stateless_gamma([], seed=seeds[:, 1], alpha=alpha)
        return a / tf.maximum(a + b, 1e-12)

    def blend(lam, mask=None):
        other = tf.gather(x, perm)
        mixed = lam * x + (1.0 - lam) * other if mask is None else tf.where(mask, other, x)
        out = (mixed, lam * targets + (1.0 - lam) * tf.gather(targets, perm))
        if weights is not None:
            out = (*out, lam * weights + (1.0 - lam) * tf.gather(weights, perm))
        return out

    def do_mixup():
        return blend(beta(mixup))

    def do_cutmix():
        h, w = int(x.shape[1]), int(x.shape[2])
        side = tf.sqrt(1.0 - beta(cutmix))  # the box's side as a share of the image's
        cy = gen.uniform([], 0.0, float(h))
        cx = gen.uniform([], 0.0, float(w))
        y0 = tf.cast(tf.clip_by_value(tf.round(cy - side * h / 2), 0, h), tf.int32)
        y1 = tf.cast(tf.clip_by_value(tf.round(cy + side * h / 2), 0, h), tf.int32)
        x0 = tf.cast(tf.clip_by_value(tf.round(cx - side * w / 2), 0, w), tf.int32)
        x1 = tf.cast(tf.clip_by_value(tf.round(cx + side * w / 2), 0, w), tf.int32)
        rows, cols = tf.range(h)[:, None], tf.range(w)[None, :]
        box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
        lam = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / float(h * w)
        return blend(lam, box[None, :, :, None])

    if mixup and cutmix:
        return tf.cond(gen.uniform([]) < 0.5, do_cutmix, do_mixup)
    if cutmix:
        return do_cutmix()
    if mixup:
        return do_mixup()
    return (x, targets) if weights is None else (x, targets, weights)
