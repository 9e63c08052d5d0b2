"""`captioner caption` flags: beam width, n-best, attention figure, batch output to a file."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from model_checks import check_record
from PIL import Image

import captioner
from captioner.artifacts.model_files import ModelInfo, save_model
from captioner.cli.main import main
from captioner.models.base import build_caption_model, get_decoder
from captioner.text.vocabulary import Vocabulary

VOCAB = Vocabulary.build(["a dog runs on the grass", "a red circle on a grey background"], min_count=1,
                         max_length=6)


@pytest.fixture(scope="module")
def model_args(tmp_path_factory) -> list[str]:
    """A saved random-weight model; with `--encoder-weights none` the CLI runs without downloads."""
    folder = tmp_path_factory.mktemp("model")
    keras.utils.set_random_seed(0)
    model = build_caption_model(len(VOCAB), (49, 1280), embedding_dim=8, units=16, attention_units=8)
    out_vocab = get_decoder(model).out_vocab
    out_vocab.bias.assign(out_vocab.bias - 5 * keras.ops.one_hot(VOCAB.end_id, len(VOCAB)))  # no empty captions
    info = ModelInfo("mobilenet_v2", 224, len(VOCAB), VOCAB.fingerprint)
    save_model(model, VOCAB, info, folder / "mymodel.h5", folder / "tokenizer.pkl")
    return ["--model", str(folder / "mymodel.h5"), "--tokenizer", str(folder / "tokenizer.pkl"),
            "--encoder-weights", "none"]


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(
            folder / f"{i}.jpg")
    return folder


def test_attention_writes_a_png_figure(model_args, photos, tmp_path, capsys):
    out = tmp_path / "figures" / "attention.png"
    code = main(["caption", str(photos / "0.jpg"), "--attention", str(out), *model_args])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as figure:
        assert figure.format == "PNG" and figure.width > 400 and figure.height > 150
        colours = np.asarray(figure.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(colours, axis=0)) > 100  # photo panels, not a blank canvas
    assert stdout.strip() and str(out) in stderr


def test_attention_is_for_one_image(model_args, photos, capsys):
    assert main(["caption", str(photos), "--attention", "a.png", *model_args]) == 1
    assert "captioner: error: --attention draws one image, but 3 were given." in capsys.readouterr().err


def test_n_best_json_lines(model_args, photos, capsys):
    assert main(["caption", str(photos), "--beam", "3", "--n-best", "3", "--json", *model_args]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == [str(photos / f"{i}.jpg") for i in range(3)]
    model = captioner.load(model_args[1], model_args[3], encoder_weights=None)  # the CLI's random encoder: shared
    grids = model.encode([line["image"] for line in lines])
    for line, grid in zip(lines, grids, strict=True):
        texts = [n["caption"] for n in line["n_best"]]
        assert texts[0] == line["caption"] and len(set(texts)) == len(texts) <= 3
        # Each alternative's confidence and log p are the model's own for its words, not another beam's.
        check_record(line, model.model, model.vocab, grid, model.search.max_length)


def test_n_best_cannot_exceed_the_beam(model_args, photos, capsys):
    assert main(["caption", str(photos), "--beam", "2", "--n-best", "3", *model_args]) == 1
    assert "--n-best must be between 1 and --beam (2), got 3." in capsys.readouterr().err


def test_output_file_is_written_then_resumed(model_args, photos, tmp_path, capsys):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "captions.jsonl"
    argv = ["caption", str(photos), "--output", str(out), "--beam", "1", *model_args]
    assert main(argv) == 1  # one bad file: reported, the rest written
    stdout, stderr = capsys.readouterr()
    assert "3 images captioned" in stdout and "skipped" in stderr and "broken.jpg" in stderr
    assert "1 of 4 images could not be captioned" in stderr
    assert len(out.read_text().splitlines()) == 3

    (photos / "broken.jpg").unlink()
    assert main(argv) == 0
    assert "0 images captioned" in capsys.readouterr().out and len(out.read_text().splitlines()) == 3


def test_an_ensemble_of_a_model_with_itself_captions_as_the_model(model_args, photos, capsys):
    """--model repeated decodes the models together; a model averaged with itself is that model."""
    single = ["--encoder-weights", "none", "--model", model_args[1]]
    assert main(["caption", str(photos), "--n-best", "3", "--json", *single]) == 0
    alone = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["caption", str(photos), "--n-best", "3", "--json", *single, "--model", model_args[1]]) == 0
    together = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["caption"] for r in together] == [r["caption"] for r in alone]
    def n_best(rows: list[dict]) -> list[list[str]]:
        return [[a["caption"] for a in r["n_best"]] for r in rows]

    assert n_best(together) == n_best(alone)
    np.testing.assert_allclose([r["log_prob"] for r in together], [r["log_prob"] for r in alone], atol=1e-3)
