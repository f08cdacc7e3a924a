"""Mixup and CutMix of training batches (tiny shapes) and their wiring into training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

N, S = 12, 8


def _batch():
    """Image i is the constant i + 1 and its target the one-hot of class i (N classes), so a
    mixed image and target say which images were mixed, and by how much."""
    import tensorflow as tf

    x = np.repeat(np.arange(1, N + 1, dtype=np.float32), S * S).reshape(N, S, S, 1)
    return (tf.constant(x), tf.constant(np.eye(N, dtype=np.float32)),
            tf.constant(np.arange(N, dtype=np.float32) + 10.0))


def _partners(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's own weight and its partner (itself when it was mixed with itself)."""
    own = t[np.arange(N), np.arange(N)]
    rest = t.copy()
    rest[np.arange(N), np.arange(N)] = -1.0
    partner = np.where(own > 1.0 - 1e-6, np.arange(N), rest.argmax(1))
    return own, partner


def test_mixup_blends_images_targets_and_weights_by_one_weight() -> None:
    import tensorflow as tf

    from training.augment import mix_batch

    gen = tf.random.Generator.from_seed(7)
    x, t, w = _batch()
    lams = []
    for _ in range(20):
        xo, to, wo = (np.asarray(a) for a in mix_batch(x, t, w, mixup=0.4, gen=gen))
        np.testing.assert_allclose(to.sum(1), 1.0, atol=1e-6)
        own, partner = _partners(to)
        mixed = partner != np.arange(N)
        assert mixed.sum() >= N // 2  # a permutation, not the identity
        lam = own[mixed]
        np.testing.assert_allclose(lam, lam[0], atol=1e-6)  # one weight for the batch
        lams.append(float(lam[0]))
        want = own * (np.arange(N) + 1) + (1 - own) * (partner + 1)
        np.testing.assert_allclose(xo[..., 0], np.broadcast_to(want[:, None, None], (N, S, S)),
                                   rtol=1e-5)  # whole images blended by that weight
        np.testing.assert_allclose(wo, own * (np.arange(N) + 10) + (1 - own) * (partner + 10),
                                   rtol=1e-5)
    assert 0.0 <= min(lams) and max(lams) <= 1.0 and np.std(lams) > 0.05  # drawn per batch


def test_cutmix_pastes_one_box_and_weighs_targets_by_area() -> None:
    import tensorflow as tf

    from training.augment import mix_batch

    gen = tf.random.Generator.from_seed(3)
    x, t, _ = _batch()
    boxes = set()
    for _ in range(20):
        xo, to = (np.asarray(a) for a in mix_batch(x, t, cutmix=1.0, gen=gen))
        own, partner = _partners(to)
        img = xo[..., 0]
        mine = img == (np.arange(N) + 1)[:, None, None]
        theirs = img == (partner + 1)[:, None, None]
        assert (mine | theirs).all()  # every pixel is one of the two images', unblended
        pasted = ~mine[partner != np.arange(N)]
        if not len(pasted):
            continue
        assert (pasted == pasted[0]).all()  # the same box in every image of the batch
        rows, cols = np.nonzero(pasted[0])
        if len(rows):
            box = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
            assert pasted[0].sum() == (box[1] - box[0]) * (box[3] - box[2])  # a rectangle
            boxes.add(box)
        mixed = partner != np.arange(N)
        np.testing.assert_allclose(own[mixed], mine[mixed].mean(axis=(1, 2)), atol=1e-6)
    assert len(boxes) > 5  # drawn per batch


def test_both_take_one_of_the_two_per_batch_and_none_is_the_identity() -> None:
    import tensorflow as tf

    from training.augment import mix_batch

    gen = tf.random.Generator.from_seed(11)
    x, t, w = _batch()
    kinds = set()
    for _ in range(30):
        xo = np.asarray(mix_batch(x, t, mixup=1.0, cutmix=1.0, gen=gen)[0])
        whole = np.isclose(xo, np.round(xo)).all()
        kinds.add("cutmix" if whole else "mixup")
    assert kinds == {"cutmix", "mixup"}
    same = mix_batch(x, t, w, gen=gen)
    for a, b in zip(same, (x, t, w)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match=">= 0"):
        mix_batch(x, t, mixup=-1.0)


def test_dataset_mixes_only_dense_targets() -> None:
    from core.preprocess import INPUT_SIZE, LABELS
    from training.config import AugmentConfig
    from training.data import Split
    from training.train import make_tf_dataset

    rng = np.random.default_rng(1)
    split = Split(rng.integers(0, 256, (20, INPUT_SIZE, INPUT_SIZE)).astype(np.uint8),
                  rng.integers(0, len(LABELS), 20))
    aug = AugmentConfig(mixup=0.5, cutmix=1.0)
    with pytest.raises(ValueError, match="dense targets"):
        make_tf_dataset(split, 8, aug)
    targets = np.eye(len(LABELS), dtype=np.float32)[split.y]
    batches = list(make_tf_dataset(split, 8, aug, shuffle=True, targets=targets,
                                   class_weight={c: 1.0 + c for c in range(len(LABELS))}))
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    for xb, tb, wb in batches:
        assert xb.shape[1:] == (INPUT_SIZE, INPUT_SIZE, 1) and tb.shape[1] == len(LABELS)
        np.testing.assert_allclose(np.asarray(tb).sum(1), 1.0, atol=1e-5)
        assert (np.asarray(wb) >= 1.0).all() and (np.asarray(wb) <= len(LABELS)).all()
    soft = np.concatenate([np.asarray(b[1]) for b in batches])
    assert (soft.max(1) < 1.0 - 1e-3).any()  # some targets are mixtures of two classes


def test_training_with_mixup_records_it_and_refuses_imagenet(tmp_path, tiny_folder) -> None:
    from training.evaluate import load_keras_model_dir
    from training.train import MixError, TrainConfig, train

    cfg = TrainConfig(data=str(tiny_folder), out=str(tmp_path / "run"),
                      models_dir=str(tmp_path / "m"), name="mixed", width=0.0625, epochs=1,
                      batch_size=8, jit_compile=False, verbose=0, convert=False,
                      cache_dir=str(tmp_path / "cache"), label_smoothing=0.1)
    cfg = replace(cfg, augment=replace(cfg.augment, mixup=0.4, cutmix=1.0))
    report = train(cfg)
    assert 0.0 <= report["accuracy"] <= 1.0
    _, meta = load_keras_model_dir(Path(cfg.models_dir) / cfg.name)
    assert meta["training"]["augment"]["mixup"] == 0.4
    card = (Path(cfg.models_dir) / cfg.name / "MODEL_CARD.md").read_text()
    assert "--mixup 0.4 --cutmix 1.0" in card
    with pytest.raises(MixError, match="ImageNet"):
        train(replace(cfg, weights="imagenet", overwrite=True))
