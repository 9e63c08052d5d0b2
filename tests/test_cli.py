"""The `captioner` command: helpful --help, captions on stdout, one clear line per error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from model_checks import check_record

import captioner
from captioner.artifacts.model_files import read_model_info
from captioner.cli.main import main

COMMANDS = ("extract", "train", "average", "caption", "evaluate")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"captioner {command}" in out and "--" in out


def test_console_script_reports_missing_model_in_one_line(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    run = subprocess.run([sys.executable, "-m", "captioner", "caption", str(image), "--model",
                          str(tmp_path / "mymodel.h5")], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("captioner:")]
    assert errors == [f"captioner: error: {tmp_path / 'mymodel.h5'}: model file not found; train one with "
                      f"`captioner train` or pass --model with the path to mymodel.h5."]
    assert "Traceback" not in run.stderr


def test_caption_prints_captions_and_reports_bad_files(shapes_model, tmp_path, capsys):
    result = shapes_model["result"]
    image = shapes_model["folder"] / "images" / sorted(shapes_model["held_out"])[0]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    code = main(["caption", str(image), str(bad), "--model", str(result.model_path),
                 "--tokenizer", str(result.vocab_path), "--encoder-weights", str(shapes_model["weights"]),
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    line = json.loads(out.strip())
    assert line["caption"] == shapes_model["held_out"][image.name]
    model = captioner.load(result.model_path, result.vocab_path, encoder_weights=shapes_model["weights"])
    check_record(line, model.model, model.vocab, model.encode([image])[0], model.search.max_length)
    assert "bad.jpg: not an image" in err and "1 of 2 images could not be captioned" in err


def test_evaluate_prints_metrics_and_writes_json(shapes_model, tmp_path, capsys):
    result = shapes_model["result"]
    model = tmp_path / "mymodel.h5"
    shutil.copy(result.model_path, model)  # --record writes into the model file
    out_file = tmp_path / "scores.json"
    code = main(["evaluate", "--data", str(shapes_model["folder"] / "captions.csv"), "--split", "test",
                 "--model", str(model), "--tokenizer", str(result.vocab_path),
                 "--encoder-weights", str(shapes_model["weights"]), "--cache-dir", str(tmp_path / "cache"),
                 "--fast", "--output", str(out_file), "--record"])
    assert code == 0
    table = capsys.readouterr().out
    assert "BLEU-4" in table and "CIDEr" in table and "test greedy" in table
    assert "CHAIR_s" in table  # English captions: the invented-objects table too
    scores = json.loads(out_file.read_text())["test greedy"]
    assert scores["BLEU-4"] > 0.8
    assert read_model_info(model).extra["test greedy"] == scores  # what the app's model panel shows


def test_train_without_data_is_a_clear_error(capsys):
    assert main(["train"]) == 1
    assert "give --data" in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    ([], [("mymodel.h5", "tokenizer.pkl")]),
    (["--lang", "zh"], [("models/zh/mymodel.h5", "models/zh/tokenizer.pkl")]),
    (["--model", "runs/x/mymodel.h5"], [("runs/x/mymodel.h5", "runs/x/tokenizer.pkl")]),
    (["--model", "a.h5", "--tokenizer", "b.pkl"], [("a.h5", "b.pkl")]),
    (["--model", "a/m.h5", "--model", "b/m.h5"], [("a/m.h5", "a/tokenizer.pkl"), ("b/m.h5", "b/tokenizer.pkl")]),
])
def test_model_paths_follow_language_and_model(argv, expected):
    from captioner.cli.main import build_parser
    from captioner.cli.options import model_paths

    args = build_parser().parse_args(["caption", "x.jpg", *argv])
    assert [tuple(str(p) for p in pair) for pair in model_paths(args)] == expected


def test_one_tokenizer_for_an_ensemble_is_refused(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    argv = ["caption", str(tmp_path / "x.png"), "--model", "a.h5", "--model", "b.h5", "--tokenizer", "t.pkl"]
    assert main(argv) == 1
    assert "--tokenizer names the vocabulary of one model" in capsys.readouterr().err


def test_missing_language_model_names_its_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["caption", "x.png", "--lang", "de"]) == 1
    assert "models/de/mymodel.h5: model file not found" in capsys.readouterr().err
