"""Bad input to train / ensemble / evaluate / evaluate-video: refused at parse time or before any
work, as one ``error:`` line (exit 2), or ``error: interrupted`` (exit 130) on Ctrl-C."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import run
from core.preprocess import INPUT_SIZE, LABELS
from training.config import TrainConfig
from training.export import ExportTargetError, export_target
from training.train import RunFolderError, check_run_folder


def refused(argv: list[str], capsys) -> str:
    """``run.py ARGV`` must stop in argparse with exit 2; returns its error line."""
    with pytest.raises(SystemExit) as exc:
        run.main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    return lines[-1]


T = ["train", "--data", "d.zip"]


@pytest.mark.parametrize("argv, flag, says", [
    (T + ["--lr", "nan"], "--lr", "finite"),
    (T + ["--lr", "-1"], "--lr", "> 0"),
    (T + ["--lr", "0"], "--lr", "> 0"),
    (T + ["--teacher-temperature", "nan"], "--teacher-temperature", "finite"),
    (T + ["--width", "0"], "--width", "> 0"),
    (T + ["--width", "-1"], "--width", "> 0"),
    (T + ["--width", "nan"], "--width", "finite"),
    (T + ["--max-minutes", "nan"], "--max-minutes", "finite"),
    (T + ["--max-minutes", "-1"], "--max-minutes", ">= 0"),
    (T + ["--resume-lr", "inf"], "--resume-lr", "finite"),
    (T + ["--warmup-epochs", "-3"], "--warmup-epochs", ">= 0"),
    (T + ["--batch-size", "0"], "--batch-size", ">= 1"),
    (T + ["--batch-size", "-5"], "--batch-size", ">= 1"),
    (T + ["--epochs", "0"], "--epochs", ">= 1"),
    (T + ["--epochs", "2.5"], "--epochs", "not an integer"),
    (T + ["--limit", "-5"], "--limit", ">= 0"),
    (T + ["--mixup", "-0.2"], "--mixup", ">= 0"),
    (T + ["--cutmix", "nan"], "--cutmix", "finite"),
    (T + ["--patience", "-1"], "--patience", ">= 0"),
    (T + ["--seed", "-1"], "--seed", "from 0 to"),
    (T + ["--seed", str(2**32)], "--seed", "from 0 to"),
    (T + ["--split-seed", "-1"], "--split-seed", "from 0 to"),
    (T + ["--name", "../../escaped"], "--name", "plain folder name"),
    (T + ["--name", "a/b"], "--name", "plain folder name"),
    (T + ["--name", ".."], "--name", "plain folder name"),
    (T + ["--name", ""], "--name", "must not be empty"),
    (["evaluate", "--data", "d", "--seed", "-5"], "--seed", "from 0 to"),
    (["ensemble", "m", "--train-minutes", "nan"], "--train-minutes", "finite"),
    (["ensemble", "m", "--name", "../x"], "--name", "plain folder name"),
    (["ensemble", "m", "--name", ""], "--name", "must not be empty"),
    (["evaluate-video", "--clips", "c", "--smoothing-s", "nan"], "--smoothing-s", "finite"),
    (["evaluate-video", "--clips", "c", "--reuse-s", "-1"], "--reuse-s", ">= 0"),
    (["evaluate-video", "--clips", "c", "--reuse-s", "nan"], "--reuse-s", "finite"),
    (["evaluate-video", "--clips", "c", "--switch-per-s", "0"], "--switch-per-s", "> 0"),
    (["evaluate-video", "--clips", "c", "--evidence-s", "inf"], "--evidence-s", "finite"),
    (["evaluate-video", "--clips", "c", "--hysteresis", "nan"], "--hysteresis", "[0, 1)"),
])
def test_bad_numbers_and_names_are_refused_at_parse_time(argv, flag, says, capsys) -> None:
    line = refused(argv, capsys)
    assert f"error: argument {flag}" in line and says in line


def test_good_values_still_parse() -> None:
    args = run.build_parser().parse_args(
        T + ["--lr", "1e-4", "--width", "0.5", "--epochs", "1", "--batch-size", "1",
             "--seed", "0", "--split-seed", str(2**32 - 1), "--max-minutes", "0", "--limit", "0",
             "--warmup-epochs", "0", "--name", "my-model.v2", "--overwrite"])
    cfg = run.config_from_args(TrainConfig, args)
    assert (cfg.lr, cfg.width, cfg.epochs, cfg.seed, cfg.split_seed) == (1e-4, 0.5, 1, 0,
                                                                         2**32 - 1)
    assert cfg.name == "my-model.v2" and cfg.overwrite is True
    assert run.config_from_args(TrainConfig, run.build_parser().parse_args(T)).overwrite is False
    ev = run.build_parser().parse_args(["evaluate-video", "--clips", "c", "--reuse-s", "0",
                                        "--smoothing-s", "0"])
    assert ev.reuse_s == 0.0 and ev.smoothing_s == 0.0


# --------------------------------------------------------------------------- export target

def write_model_folder(folder: Path, data: str = "data.zip") -> Path:
    """A model folder's metadata.json only (what the checks before any loading read)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps({
        "name": folder.name, "format_version": 1, "files": {"keras": "model.keras"},
        "labels": list(LABELS), "input": {"size": INPUT_SIZE},
        "training": {"data": data, "width": 0.0625}, "dataset": {"seed": 1234}}))
    return folder


def test_export_target_refuses_an_existing_model_bad_names_and_files(tmp_path) -> None:
    models = tmp_path / "models"
    assert export_target(models, "new") == models / "new"  # nothing there yet
    write_model_folder(models / "default")
    with pytest.raises(ExportTargetError, match=f"{models / 'default'} already holds a model: "
                                                "pass --name NEW .* or --overwrite"):
        export_target(models, "default")
    (models / "kept").mkdir()
    (models / "kept" / "model.keras").write_bytes(b"x")  # model.keras alone counts too
    with pytest.raises(ExportTargetError, match="already holds a model"):
        export_target(models, "kept")
    assert export_target(models, "default", overwrite=True) == models / "default"
    (models / "empty").mkdir()  # a folder without a model may be written
    assert export_target(models, "empty") == models / "empty"
    for name in ("", "../escaped", "a/b", "a\\b", ".", ".."):
        with pytest.raises(ExportTargetError, match="--name"):
            export_target(models, name, overwrite=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExportTargetError, match="--models-dir .*afile: is a file"):
        export_target(tmp_path / "afile", "default", overwrite=True)
    (models / "taken").write_text("x")
    with pytest.raises(ExportTargetError, match="taken: is a file"):
        export_target(models, "taken", overwrite=True)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training gets as far as reading the dataset."""
    import training.train

    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(training.train, "load_dataset", boom)


def train_cli(tmp_path: Path, *extra: str) -> int:
    return run.main(["train", "--data", str(tmp_path / "data.zip"), "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--models-dir", str(tmp_path / "models"),
                     *extra])


def test_train_refuses_to_replace_a_model_before_training(tmp_path, capsys, no_training
                                                          ) -> None:
    shipped = write_model_folder(tmp_path / "models" / "mine")
    before = (shipped / "metadata.json").read_text()
    assert train_cli(tmp_path, "--name", "mine") == 2
    err = capsys.readouterr().err
    assert err == (f"error: {shipped} already holds a model: pass --name NEW to export under "
                   "another name, or --overwrite to replace it\n")
    assert (shipped / "metadata.json").read_text() == before
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
    # --no-export needs no export folder
    with pytest.raises(AssertionError, match="training started"):
        train_cli(tmp_path, "--name", "mine", "--no-export")
    with pytest.raises(AssertionError, match="training started"):
        train_cli(tmp_path, "--name", "mine", "--overwrite")


def test_train_refuses_an_earlier_run_a_file_as_out_and_a_corrupt_state(tmp_path, capsys,
                                                                        no_training) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.keras").write_bytes(b"x")
    (out / "history.csv").write_text("epoch\n0\n")
    assert train_cli(tmp_path, "--name", "new") == 2
    err = capsys.readouterr().err
    assert err == (f"error: --out {out} holds a run (last.keras, history.csv): use --resume to "
                   "continue it or another --out (--overwrite starts it over)\n")
    (out / "state.json").write_text("{not json")
    assert train_cli(tmp_path, "--name", "new", "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / 'state.json'}: unreadable checkpoint state (")
    assert err.count("\n") == 1 and "--overwrite" in err
    (out / "state.json").write_text(json.dumps({"epoch": 2}))  # no best_val_accuracy
    assert train_cli(tmp_path, "--name", "new", "--resume") == 2
    assert "unreadable checkpoint state" in capsys.readouterr().err
    (out / "state.json").write_text(json.dumps({"epoch": 2, "best_val_accuracy": 0.5}))
    with pytest.raises(AssertionError, match="training started"):  # a good state resumes
        train_cli(tmp_path, "--name", "new", "--resume")
    with pytest.raises(AssertionError, match="training started"):
        train_cli(tmp_path, "--name", "new", "--overwrite")

    (tmp_path / "afile").write_text("x")
    assert run.main(["train", "--data", "d.zip", "--out", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err == (f"error: --out {tmp_path / 'afile'}: is a file, not a "
                                       "folder\n")
    assert train_cli(tmp_path, "--overwrite", "--models-dir", str(tmp_path / "afile")) == 2
    assert capsys.readouterr().err == (f"error: --models-dir {tmp_path / 'afile'}: is a file, "
                                       "not a folder\n")


def test_check_run_folder_allows_a_new_folder_and_checks_the_export_only_when_exporting(
        tmp_path) -> None:
    cfg = TrainConfig(data="d", out=str(tmp_path / "new"), models_dir=str(tmp_path / "m"))
    check_run_folder(cfg)
    write_model_folder(tmp_path / "m" / "default")
    with pytest.raises(ExportTargetError):
        check_run_folder(cfg)
    check_run_folder(replace(cfg, export=False))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "best.keras").write_bytes(b"x")
    with pytest.raises(RunFolderError, match="holds a run"):
        check_run_folder(replace(cfg, export=False))


def test_ensemble_refuses_to_replace_a_model_and_says_to_pass_data(tmp_path, capsys) -> None:
    src = write_model_folder(tmp_path / "src", data="relative/not-here.zip")
    models = tmp_path / "models"
    shipped = write_model_folder(models / "mine")
    before = (shipped / "metadata.json").read_text()
    assert run.main(["ensemble", str(src), "--models-dir", str(models), "--name", "mine"]) == 2
    assert capsys.readouterr().err == (f"error: {shipped} already holds a model: pass --name "
                                       "NEW to export under another name, or --overwrite to "
                                       "replace it\n")
    assert (shipped / "metadata.json").read_text() == before
    # with --overwrite it goes on, to the recorded dataset, which is not there
    assert run.main(["ensemble", str(src), "--models-dir", str(models), "--name", "mine",
                     "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the dataset recorded in {src}, 'relative/not-here.zip', is "
                          "not there (a relative path is read from the current folder")
    assert err.endswith("; pass --data PATH\n")
    assert (shipped / "metadata.json").read_text() == before


# --------------------------------------------------------------------------- Ctrl-C, bad models

def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch) -> None:
    import core.runtimes
    import training.ensemble
    import training.train

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.train, "train", interrupted)
    out = tmp_path / "run"
    argv = ["train", "--data", "d.zip", "--out", str(out)]
    assert run.main(argv) == 130
    assert capsys.readouterr().err == "error: interrupted\n"  # no checkpoint yet
    out.mkdir()
    (out / "last.keras").write_bytes(b"x")
    (out / "state.json").write_text(json.dumps({"epoch": 1, "best_val_accuracy": 0.2}))
    assert run.main(argv) == 130
    assert capsys.readouterr().err == (f"error: interrupted; to continue, run the same command "
                                       f"with --resume --out {out}\n")

    monkeypatch.setattr(training.ensemble, "export_ensemble", interrupted)
    assert run.main(["ensemble", str(tmp_path / "m")]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"

    monkeypatch.setattr(core.runtimes, "load_classifier", interrupted)
    assert run.main(["evaluate", "--data", "d.zip", "--model", str(tmp_path / "m")]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "labels.csv").write_text("file,label\n")
    assert run.main(["evaluate-video", "--clips", str(clips)]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_evaluate_a_model_with_other_classes_is_one_error_line(tiny_folder, tmp_path, capsys,
                                                               monkeypatch) -> None:
    import core.runtimes

    class FiveClasses:
        name, backend = "five", "fake"

        def predict_batch(self, x):
            return np.full((len(x), 5), 0.2, np.float32)

    monkeypatch.setattr(core.runtimes, "load_classifier", lambda *a, **k: FiveClasses())
    assert run.main(["evaluate", "--data", str(tiny_folder), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model returned (70, 5) for a batch of 70; expected "
                          "(70, 7): one probability for each of the labels angry, disgust")
    assert err.count("\n") == 1


def test_evaluate_video_names_the_missing_labels_csv_columns(tmp_path, capsys) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "labels.csv").write_text("name,emotion\nx.mp4,happy\n")
    assert run.main(["evaluate-video", "--clips", str(clips)]) == 2
    assert capsys.readouterr().err == (f"error: {clips / 'labels.csv'}: needs the columns "
                                       "file,label in its first line (it has name,emotion)\n")
    (clips / "labels.csv").write_text("")
    assert run.main(["evaluate-video", "--clips", str(clips)]) == 2
    assert "(it has none)" in capsys.readouterr().err


def test_the_default_run_folder_and_name_move_aside_instead_of_replacing(tmp_path,
                                                                        monkeypatch) -> None:
    """`run.py train --data PATH` (the documented contract) trains on a fresh checkout, where
    models/default is the shipped model, and again: the defaults move to the first free
    runs/default-N and models/default-N; --resume and --overwrite keep them."""
    from training.config import TrainConfig
    from training.export import free_name
    from training.train import free_defaults

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data="d.zip")
    assert (free_defaults(cfg).out, free_defaults(cfg).name) == ("runs/default", "default")
    write_model_folder(tmp_path / "models" / "default")
    (tmp_path / "runs" / "default").mkdir(parents=True)
    (tmp_path / "runs" / "default" / "last.keras").write_bytes(b"x")
    (tmp_path / "models" / "default-2").mkdir()  # taken (even empty)
    moved = free_defaults(cfg)
    assert (moved.out, moved.name) == ("runs/default-2", "default-3")
    kept = free_defaults(replace(cfg, resume=True))
    assert (kept.out, kept.name) == ("runs/default", "default-3")
    assert free_defaults(replace(cfg, overwrite=True)).name == "default"
    assert free_name("models", "mine", False) == "mine"  # a name given on purpose stays
