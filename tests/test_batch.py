"""Batch captioning into CSV/JSONL: same captions as one by one, resumable, bad files reported."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pandas as pd
import pytest
from model_checks import check_record
from PIL import Image

from captioner.artifacts.model_files import ModelInfo
from captioner.decoding.options import DecodeOptions
from captioner.errors import CaptionerError
from captioner.models.base import build_caption_model, get_decoder
from captioner.serving.api import Captioner
from captioner.serving.batch import CaptionFile, caption_to_file
from captioner.text.vocabulary import Vocabulary

VOCAB = Vocabulary.build(["a dog runs on the grass", "a red circle on a grey background"], min_count=1,
                         max_length=6)
OPTIONS = DecodeOptions(beam_size=2, n_best=2)


@pytest.fixture(scope="module")
def model() -> Captioner:
    """A random-weight captioner (random MobileNetV2 too): captions are arbitrary but deterministic and not empty."""
    keras.utils.set_random_seed(0)
    caption_model = build_caption_model(len(VOCAB), (49, 1280), embedding_dim=8, units=16, attention_units=8)
    out_vocab = get_decoder(caption_model).out_vocab
    out_vocab.bias.assign(out_vocab.bias - 5 * keras.ops.one_hot(VOCAB.end_id, len(VOCAB)))  # no empty captions
    return Captioner(caption_model, VOCAB, ModelInfo("mobilenet_v2", 224, len(VOCAB), VOCAB.fingerprint),
                     encoder_weights=None)


class _CountingEncoder:
    """The model's encoder, counting the images it encodes; can stop like Ctrl-C before a call."""

    def __init__(self, encoder, interrupt_at: int | None = None):
        self.encoder, self.interrupt_at = encoder, interrupt_at
        self.image_size = encoder.image_size
        self.batches: list[int] = []

    @property
    def images(self) -> int:
        return sum(self.batches)

    def __call__(self, images):
        if len(self.batches) == self.interrupt_at:
            raise KeyboardInterrupt
        self.batches.append(len(images))
        return self.encoder(images)

    def encode_and_classify(self, images):
        """What captioners call: the grids (counted) and no class probabilities (MobileNetV2 has no classifier)."""
        return self(images), None


@pytest.fixture
def counting(model, monkeypatch):
    """Install a fresh counting encoder in the model; returns a factory taking interrupt_at."""
    real = model.encoder

    def install(interrupt_at: int | None = None) -> _CountingEncoder:
        counter = _CountingEncoder(real, interrupt_at)
        monkeypatch.setattr(model, "_encoder", counter)
        return counter

    return install


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:02d}.png"
        Image.new("RGB", (64 + i, 48), (i * 37 % 255, 90, 200 - i * 20)).save(path)
        paths.append(path)
    return paths


def _records(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        frame = pd.read_csv(path)
        return [{**row, "n_best": json.loads(row["n_best"])} for row in frame.to_dict("records")]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_output_holds_the_same_captions_as_captioning_one_by_one(model, tmp_path, suffix):
    paths = _images(tmp_path / "img", 5)
    report = caption_to_file(model, paths, tmp_path / f"out{suffix}", OPTIONS, batch_size=2, progress=False)
    assert (report.captioned, report.already_done, report.failures) == (5, 0, [])
    records = _records(tmp_path / f"out{suffix}")
    assert [r["image"] for r in records] == [str(p) for p in paths]
    for record, path, grid in zip(records, paths, model.encode(paths), strict=True):
        expected = model.caption(path, OPTIONS)
        assert record["caption"] == expected.text
        assert record["confidence"] == pytest.approx(expected.confidence, abs=1e-4)
        assert [n["caption"] for n in record["n_best"]] == [a.text for a in expected.ranked]
        # Each row's and n-best entry's confidence and log p are the model's own for that caption's words.
        check_record(record, model.model, VOCAB, grid, model.search.max_length)


def test_interrupted_run_resumes_without_redoing_work(model, counting, tmp_path):
    paths = _images(tmp_path / "img", 8)
    output = tmp_path / "out.jsonl"
    first = counting(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        caption_to_file(model, paths, output, OPTIONS, batch_size=3, progress=False)
    assert first.batches == [3, 3]
    assert len(_records(output)) == 6  # both finished batches were kept

    second = counting()
    report = caption_to_file(model, paths, output, OPTIONS, batch_size=3, progress=False)
    assert second.images == 2 and (report.captioned, report.already_done) == (2, 6)
    assert sorted(r["image"] for r in _records(output)) == sorted(str(p) for p in paths)

    third = counting()
    report = caption_to_file(model, paths, output, OPTIONS, batch_size=3, progress=False)
    assert third.images == 0 and (report.captioned, report.already_done) == (0, 8)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_line_cut_short_by_a_crash_is_redone(model, counting, tmp_path, suffix):
    paths = _images(tmp_path / "img", 4)
    output = tmp_path / f"out{suffix}"
    caption_to_file(model, paths, output, OPTIONS, batch_size=4, progress=False)
    text = output.read_text(encoding="utf-8")
    output.write_text(text[: len(text) - 25], encoding="utf-8")  # the last record loses its end
    counter = counting()
    report = caption_to_file(model, paths, output, OPTIONS, batch_size=4, progress=False)
    assert counter.images == 1 and report.captioned == 1
    assert [r["image"] for r in _records(output)] == [str(p) for p in paths]


def test_bad_files_are_reported_with_the_reason_and_skipped(model, counting, tmp_path):
    paths = _images(tmp_path / "img", 3)
    empty, garbage = tmp_path / "img" / "empty.jpg", tmp_path / "img" / "garbage.png"
    empty.write_bytes(b"")
    garbage.write_bytes(b"this is not a picture")
    mixed = [paths[0], empty, paths[1], garbage, paths[2]]
    output = tmp_path / "out.csv"
    report = caption_to_file(model, mixed, output, OPTIONS, batch_size=2, progress=False)
    assert report.captioned == 3
    reasons = {f.path.name: f.reason for f in report.failures}
    assert set(reasons) == {"empty.jpg", "garbage.png"}
    assert "empty (0 bytes)" in reasons["empty.jpg"] and "not an image" in reasons["garbage.png"]
    assert [r["image"] for r in _records(output)] == [str(p) for p in paths]

    counter = counting()
    again = caption_to_file(model, mixed, output, OPTIONS, batch_size=2, progress=False)
    assert counter.images == 0 and again.already_done == 3
    assert {f.path.name for f in again.failures} == {"empty.jpg", "garbage.png"}  # tried and reported again


def test_batches_stay_bounded(model, counting, tmp_path):
    paths = _images(tmp_path / "img", 7)
    counter = counting()
    caption_to_file(model, paths, tmp_path / "out.jsonl", OPTIONS, batch_size=3, progress=False)
    assert counter.batches == [3, 3, 1]


def test_unusable_output_files_are_clear_errors(model, tmp_path):
    paths = _images(tmp_path / "img", 1)
    with pytest.raises(CaptionerError, match=r"\.csv or \.jsonl"):
        caption_to_file(model, paths, tmp_path / "out.txt", progress=False)
    (tmp_path / "other.csv").write_text("name,score\nx,1\n")
    with pytest.raises(CaptionerError, match="no 'image' column"):
        caption_to_file(model, paths, tmp_path / "other.csv", progress=False)
    (tmp_path / "other.jsonl").write_text("not json\n")
    with pytest.raises(CaptionerError, match="not a captions JSONL"):
        CaptionFile(tmp_path / "other.jsonl").images()
