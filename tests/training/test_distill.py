"""Distillation targets and camera-condition augmentation (tiny shapes)."""

from __future__ import annotations

import numpy as np
import pytest

from core.preprocess import INPUT_SIZE


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)


def test_distill_targets_mix_teacher_and_smoothed_label() -> None:
    from training.train import TeacherError, distill_targets

    rng = np.random.default_rng(3)
    teacher = rng.dirichlet(np.ones(7) * 0.3, size=50).astype(np.float32)
    labels = rng.integers(0, 7, 50)
    hard = distill_targets(labels, teacher, 0.0, label_smoothing=0.1)
    np.testing.assert_allclose(hard.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(hard[np.arange(50), labels], 0.9 + 0.1 / 7, atol=1e-6)
    np.testing.assert_allclose(distill_targets(labels, teacher, 1.0), teacher, atol=1e-5)
    mixed = distill_targets(labels, teacher, 0.7, label_smoothing=0.1)
    np.testing.assert_allclose(mixed, 0.7 * teacher + 0.3 * hard, atol=1e-5)
    soft = distill_targets(labels, teacher, 1.0, temperature=2.0)
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-5)
    assert (_entropy(soft) > _entropy(teacher) - 1e-6).all()  # a softer teacher
    assert (soft.argmax(1) == teacher.argmax(1)).all()  # with the same ranking
    with pytest.raises(TeacherError, match="weight"):
        distill_targets(labels, teacher, 1.5)
    with pytest.raises(TeacherError, match="temperature"):
        distill_targets(labels, teacher, 0.5, temperature=0.0)


def test_random_camera_degrades_a_share_of_images_within_range() -> None:
    from training.augment import AugmentConfig, RandomCamera, build_augmenter

    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (200, INPUT_SIZE, INPUT_SIZE, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(RandomCamera(1.0)(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(RandomCamera(0.0)(x, training=True)), x)
    out = np.asarray(RandomCamera(1.0, seed=1)(x, training=True))
    assert out.shape == x.shape and out.min() >= 0.0 and out.max() <= 255.0
    assert (np.abs(out - x).max(axis=(1, 2, 3)) > 1.0).all()  # every image changed
    half = np.asarray(RandomCamera(0.5, seed=2)(x, training=True))
    changed = (half != x).any(axis=(1, 2, 3)).mean()
    assert 0.38 < changed < 0.62
    # the lower resolutions lose detail: on average less high-frequency energy than the input
    grad = np.abs(np.diff(out, axis=2)).mean()
    assert grad < np.abs(np.diff(x, axis=2)).mean()
    with pytest.raises(ValueError, match="camera rate"):
        RandomCamera(2.0)
    assert not any(isinstance(la, RandomCamera) for la in build_augmenter(AugmentConfig()).layers)
    assert any(isinstance(la, RandomCamera)
               for la in build_augmenter(AugmentConfig(camera=0.3)).layers)
