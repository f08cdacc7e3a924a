"""On-the-fly augmentation for the training split only (Keras preprocessing layers)."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers


@dataclass(frozen=True)
class AugmentConfig:
    """What augmentation applies to training batches."""

    hflip: bool = True
    #: Off by default: upside-down faces do not occur in a webcam feed (see the model card).
    vflip: bool = False
    zoom: float = 0.1
    shift: float = 0.1
    rotation_deg: float = 10.0
    brightness: float = 0.2


def build_augmenter(cfg: AugmentConfig, seed: int = 1234) -> keras.Sequential:
    """A Sequential of random layers; active only when called with ``training=True``."""
    mode = "horizontal_and_vertical" if cfg.hflip and cfg.vflip else (
        "horizontal" if cfg.hflip else ("vertical" if cfg.vflip else None))
    ls: list[layers.Layer] = []
    if mode:
        ls.append(layers.RandomFlip(mode, seed=seed))
    if cfg.rotation_deg:
        ls.append(layers.RandomRotation(cfg.rotation_deg / 360.0, fill_mode="reflect", seed=seed))
    if cfg.zoom:
        ls.append(layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed))
    if cfg.shift:
        ls.append(layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="reflect", seed=seed))
    if cfg.brightness:
        ls.append(layers.RandomBrightness(cfg.brightness, value_range=(0.0, 255.0), seed=seed))
    return keras.Sequential(ls, name="augment")
