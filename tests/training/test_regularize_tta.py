"""Random erasing, label smoothing, shifted test-time views and ensembles (tiny shapes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.preprocess import INPUT_SIZE

RNG = np.random.default_rng(7)


def _faces(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, INPUT_SIZE, INPUT_SIZE, 1)).astype(np.float32)


# --------------------------------------------------------------------------- random erasing

def test_random_erase_replaces_one_rectangle_per_image() -> None:
    from training.augment import RandomErase

    x = np.full((16, INPUT_SIZE, INPUT_SIZE, 1), 300.0, np.float32)  # noise is < 255: visible
    out = np.asarray(RandomErase(1.0, seed=1)(x, training=True))
    assert out.shape == x.shape
    for img in out[..., 0]:
        changed = img != 300.0
        assert changed.any()
        assert (img[changed] >= 0).all() and (img[changed] <= 255).all()
        rows, cols = np.nonzero(changed)
        # one axis-aligned rectangle of at most 25% (+ rounding) of the image
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box <= 0.25 * INPUT_SIZE * INPUT_SIZE + 2 * INPUT_SIZE
        assert changed.sum() >= 0.9 * box
    np.testing.assert_array_equal(np.asarray(RandomErase(1.0)(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(RandomErase(0.0)(x, training=True)), x)


def test_random_erase_rate_is_a_probability() -> None:
    from training.augment import RandomErase

    x = np.full((400, 8, 8, 1), 300.0, np.float32)
    out = np.asarray(RandomErase(0.5, seed=2)(x, training=True))
    erased = (out != 300.0).any(axis=(1, 2, 3)).mean()
    assert 0.38 < erased < 0.62
    with pytest.raises(ValueError, match="erase rate"):
        RandomErase(1.5)


def test_augmenter_adds_erasing_only_when_asked() -> None:
    from training.augment import AugmentConfig, RandomErase, build_augmenter

    assert not any(isinstance(la, RandomErase) for la in build_augmenter(AugmentConfig()).layers)
    aug = build_augmenter(AugmentConfig(erase=0.5))
    assert isinstance(aug.layers[-1], RandomErase) and aug.layers[-1].rate == 0.5


def test_random_affine_resamples_once() -> None:
    from keras import layers

    from training.augment import RandomAffine

    x = _faces(32)
    np.testing.assert_allclose(np.asarray(RandomAffine(0, 0, 0)(x, training=True)), x, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(RandomAffine()(x, training=False)), x)
    out = np.asarray(RandomAffine(10, 0.1, 0.1, seed=4)(x, training=True))
    assert out.shape == x.shape and out.dtype == np.float32
    assert not np.allclose(out[0], out[1] - x[1] + x[0])  # each image its own transform
    chained = x
    for layer in (layers.RandomRotation(10 / 360, fill_mode="reflect", seed=4),
                  layers.RandomZoom(0.1, fill_mode="reflect", seed=4),
                  layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=4)):
        chained = np.asarray(layer(chained, training=True))

    def sharpness(a):
        return np.abs(np.diff(a, axis=2)).mean()

    # one interpolation keeps more detail than three chained ones
    assert sharpness(out) > 1.1 * sharpness(chained)


# --------------------------------------------------------------------------- label smoothing

def test_smoothed_loss_matches_the_smoothed_target_cross_entropy() -> None:
    import keras

    from training.model import SmoothedSparseCrossentropy

    p = RNG.dirichlet(np.ones(7), 5).astype(np.float32)
    y = np.array([0, 3, 6, 2, 2])
    eps = 0.1
    target = np.full((5, 7), eps / 7) + (1 - eps) * np.eye(7)[y]
    expected = np.mean(-(target * np.log(p)).sum(axis=1))
    loss = SmoothedSparseCrossentropy(eps)
    assert float(loss(y, p)) == pytest.approx(expected, rel=1e-4)
    plain = keras.losses.SparseCategoricalCrossentropy()(y, p)
    assert float(SmoothedSparseCrossentropy(0.0)(y, p)) == pytest.approx(float(plain), rel=1e-4)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert again.smoothing == eps
    with pytest.raises(ValueError, match="label smoothing"):
        SmoothedSparseCrossentropy(1.0)


def test_compiled_checkpoint_with_smoothing_loads_again(tmp_path: Path) -> None:
    import keras

    from training.model import SmoothedSparseCrossentropy, build_model, compile_model

    model = build_model(width=0.0625)
    compile_model(model, 1e-3, jit_compile=False, label_smoothing=0.1)
    model.fit(_faces(8), np.arange(8) % 7, epochs=1, verbose=0)
    model.save(tmp_path / "last.keras")
    loaded = keras.models.load_model(tmp_path / "last.keras")  # --resume compiles it again
    assert isinstance(loaded.loss, SmoothedSparseCrossentropy) and loaded.loss.smoothing == 0.1


# --------------------------------------------------------------------------- shifted views

def test_shift_layer_moves_pixels_with_reflection() -> None:
    from training.model import Shift

    x = _faces(2)
    out = np.asarray(Shift(3, -2)(x))
    pad = np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(out, pad[:, 3 - 2:3 - 2 + INPUT_SIZE, 3 + 3:3 + 3 + INPUT_SIZE])
    np.testing.assert_array_equal(out[:, 2:, :-3], x[:, :-2, 3:])  # inside: a plain shift
    np.testing.assert_array_equal(np.asarray(Shift(0, 0)(x)), x)


def test_shifted_tta_averages_ten_views_and_unwraps() -> None:
    from training.model import (
        HorizontalFlip,
        Shift,
        build_model,
        is_tta,
        tta_name,
        tta_views,
        with_tta,
        without_tta,
    )

    net = build_model(width=0.0625)
    assert tta_views(0) == [(False, 0, 0), (True, 0, 0)]
    views = tta_views(3)
    assert len(views) == 10 and len(set(views)) == 10
    wrapped = with_tta(net, shift=3)
    assert is_tta(wrapped) and not is_tta(net)
    assert without_tta(wrapped) is net and without_tta(net) is net
    assert with_tta(wrapped, 3) is wrapped  # applied once
    assert tta_name(0) == "hflip-average" and tta_name(3) == "hflip+shift3-average"
    x = _faces(3)
    expected = []
    for mirror, dx, dy in views:
        v = np.asarray(HorizontalFlip()(x)) if mirror else x
        expected.append(net.predict(np.asarray(Shift(dx, dy)(v)), verbose=0))
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), np.mean(expected, axis=0),
                               atol=1e-5)


# --------------------------------------------------------------------------- ensembles

def test_ensemble_averages_its_members_and_survives_export(tmp_path: Path) -> None:
    from training.evaluate import load_keras_model_dir
    from training.export import export_model
    from training.model import build_model, ensemble, members, with_tta, without_tta

    a, b = build_model(width=0.0625), build_model(width=0.0625)
    ens = ensemble([a, b])
    assert [m.count_params() for m in members(ens)] == [a.count_params()] * 2
    assert members(a) == [a]
    x = _faces(4)
    mean = (a.predict(x, verbose=0) + b.predict(x, verbose=0)) / 2
    np.testing.assert_allclose(ens.predict(x, verbose=0), mean, atol=1e-5)
    wrapped = with_tta(ens, 2)
    assert without_tta(wrapped) is ens
    report = {"accuracy": 0.5, "macro_f1": 0.4, "n": 4, "weights": "scratch",
              "members": [{"source": "models/a", "test": {"accuracy": 0.4}, "val": {},
                           "training": {"width": 0.0625, "seed": 1}},
                          {"source": "models/b", "test": {"accuracy": 0.45}, "val": {},
                           "training": {"width": 0.0625, "seed": 2}}]}
    cfg = {"data": "d.zip", "width": 0.0625, "tta": True, "tta_shift": 2,
           "ensemble_command": "python tools/reexport.py models/a models/b --tta-shift 2"}
    export_model(wrapped, tmp_path / "ens", cfg, {}, report)
    loaded, meta = load_keras_model_dir(tmp_path / "ens")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), wrapped.predict(x, verbose=0),
                               atol=1e-5)
    assert len(members(without_tta(loaded))) == 2
    assert meta["preprocessing"]["test_time_augmentation"] == "hflip+shift2-average"
    assert [m["source"] for m in meta["architecture"]["ensemble"]] == ["models/a", "models/b"]
    card = (tmp_path / "ens" / "MODEL_CARD.md").read_text()
    assert "An ensemble of 2" in card and "10 views" in card
    assert "--seed 1" in card and "--seed 2" in card and "tools/reexport.py models/a" in card
    with pytest.raises(ValueError, match="at least two"):
        ensemble([a])


def test_reproduce_command_and_cli_carry_the_new_options(capsys) -> None:
    import run
    from training.augment import AugmentConfig
    from training.export import train_command
    from training.train import TrainConfig

    cfg = TrainConfig(data="d.zip", label_smoothing=0.1, tta_shift=3,
                      augment=AugmentConfig(erase=0.5))
    cmd = train_command(cfg)
    assert "--label-smoothing 0.1" in cmd and "--tta-shift 3" in cmd and "--erase 0.5" in cmd
    assert "--erase" not in train_command(TrainConfig(data="d.zip"))
    assert "--val-keep 0.2" in train_command(TrainConfig(data="d.zip", val_keep=0.2))
    assert "--val-keep" not in train_command(TrainConfig(data="d.zip"))
    for bad in (["--val-keep", "0"], ["--val-keep", "1.5"], ["--erase", "1.5"],
                ["--label-smoothing", "x"], ["--tta-shift", "20"]):
        with pytest.raises(SystemExit) as exc:
            run.main(["train", "--data", "d.zip", *bad])
        assert exc.value.code == 2
        assert "error: argument" in capsys.readouterr().err
