"""The whole pipeline really learns: synthetic shapes in, correct captions for unseen images out."""

from __future__ import annotations

import pytest
from model_checks import check_caption

import captioner
from captioner.artifacts.model_files import read_model_info
from captioner.data.datasets import load_dataset
from captioner.decoding.options import GREEDY, DecodeOptions
from captioner.evaluation.metrics import score_captions


@pytest.mark.parametrize("trained", ["shapes_model", "updown_shapes_model"])
def test_trained_model_captions_held_out_shapes(trained, request):
    """Every decoder learns the task: exact captions for unseen images, and the file records the decoder."""
    shapes_model = request.getfixturevalue(trained)
    result = shapes_model["result"]
    assert read_model_info(result.model_path).decoder == ("updown" if trained.startswith("updown") else "sat")
    model = captioner.load(result.model_path, result.vocab_path, encoder_weights=shapes_model["weights"])
    images = sorted(shapes_model["held_out"])
    captions = model.caption_many([shapes_model["folder"] / "images" / name for name in images])
    exact = sum(c.text == shapes_model["held_out"][name] for name, c in zip(images, captions, strict=True))
    wrong = [(name, c.text) for name, c in zip(images, captions, strict=True)
             if c.text != shapes_model["held_out"][name]]
    assert exact / len(images) >= 0.9, f"only {exact}/{len(images)} exact; wrong: {wrong[:5]}"


def test_training_records_history_and_metadata(shapes_model):
    result = shapes_model["result"]
    assert len(result.history["loss"]) >= 2
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert (result.model_path.parent / "history.csv").is_file()
    assert (result.model_path.parent / "history.png").stat().st_size > 1000
    info = read_model_info(result.model_path)
    assert info.encoder == "mobilenet_v2" and info.image_size == 224
    # Recomputed, not read back: the saved model's greedy captions of the dev photos, encoded from their
    # pixels, score what the file records (so it records the saved weights' scores, greedy, on dev).
    model = captioner.load(result.model_path, result.vocab_path, encoder_weights=shapes_model["weights"])
    dataset = load_dataset(shapes_model["folder"] / "captions.csv")
    names = dataset.split("dev")
    texts = [c.text for c in model.caption_many([dataset.path(n) for n in names], GREEDY)]
    scores = score_captions({n: dataset.captions[n] for n in names}, dict(zip(names, texts, strict=True)),
                            meteor=False, ptb=False)
    assert scores["BLEU-4"] > 0.8
    recorded = info.extra["dev_greedy"]
    assert (scores["BLEU-4"], scores["CIDEr"]) == pytest.approx((recorded["BLEU-4"], recorded["CIDEr"]), abs=1e-3)


def test_caption_has_attention_and_confidence(shapes_model):
    """Each n-best caption's attention and confidence are the saved model's own for those words (one
    teacher-forced pass), whichever beam wrote it; and the trained model is confident of its best caption."""
    result = shapes_model["result"]
    model = captioner.load(result.model_path, result.vocab_path, encoder_weights=shapes_model["weights"])
    paths = [shapes_model["folder"] / "images" / name for name in sorted(shapes_model["held_out"])[:3]]
    options = DecodeOptions(beam_size=3, n_best=3)
    for grid, caption in zip(model.encode(paths), model.caption_many(paths, options), strict=True):
        assert str(caption) == caption.text
        assert caption.attention.shape == (len(caption.words), 49)
        assert caption.confidence > 0.5
        for alternative in caption.ranked:
            check_caption(alternative, model.model, model.vocab, grid, model.search.max_length, rtol=1e-3)


def test_learns_chinese_captions_written_without_spaces(chinese_shapes_model):
    result = chinese_shapes_model["result"]
    model = captioner.load(result.model_path, result.vocab_path, encoder_weights=chinese_shapes_model["weights"])
    assert model.vocab.tokenization == "chars" and model.vocab.lang == "zh"
    images = sorted(chinese_shapes_model["held_out"])
    captions = model.caption_many([chinese_shapes_model["folder"] / "images" / name for name in images])
    expected = [chinese_shapes_model["held_out"][name] for name in images]
    assert all(" " not in c.text for c in captions)
    exact = sum(c.text == e for c, e in zip(captions, expected, strict=True))
    assert exact / len(images) >= 0.9, [(c.text, e) for c, e in zip(captions, expected, strict=True)][:5]
