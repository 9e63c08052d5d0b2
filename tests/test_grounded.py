"""The grounded decoder copies what the classifier sees: on a tiny synthetic task whose training captions never
write the test objects' words, it names them from the tags alone, and it keeps the decoder contract."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import captioner
from captioner.artifacts.model_files import read_model_info
from captioner.decoding.grounding import mark_copied
from captioner.decoding.options import GREEDY, Caption, DecodeOptions
from captioner.decoding.tf_search import TFSearch
from captioner.errors import CaptionerError
from captioner.export import export_model
from captioner.features.class_row import ClassRowTable, class_word_ids, grounding_vocabulary, with_class_row
from captioner.features.imagenet import imagenet_classes
from captioner.models.base import build_caption_model, get_decoder
from captioner.text.vocabulary import Vocabulary
from captioner.training.config import TrainConfig
from captioner.training.pipelines import caption_dataset
from captioner.training.xent import CaptionTrainer

#: The synthetic classifier's classes and their caption words; training photos show only the first four.
WORDS = ["circle", "square", "star", "ring", None, "zebra", "kite"]
SEEN, NOVEL = [0, 1, 2, 3], [5, 6]
CELLS, CHANNELS = 4, 8
SIZES = {"embedding_dim": 16, "units": 32, "attention_units": 16, "dropout": 0.0}


def _photos(classes: list[int], n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """n photos: noise grids (n, cells, channels), classifier probabilities (n, classes) that favour each photo's
    class over one distractor, and the classes."""
    rng = np.random.default_rng(seed)
    shown = [int(c) for c in rng.choice(classes, n)]
    grids = rng.normal(size=(n, CELLS, CHANNELS)).astype(np.float32)
    probabilities = np.zeros((n, len(WORDS)), np.float32)
    for row, cls in enumerate(shown):
        distractor = rng.choice([c for c in range(len(WORDS)) if c != cls])
        probabilities[row, cls] = rng.uniform(0.55, 0.9)
        probabilities[row, distractor] = rng.uniform(0.05, 0.3)
    return grids, probabilities, shown


@pytest.fixture(scope="module")
def copier():
    """A grounded model trained on captions of the seen classes only: (model, vocabulary)."""
    keras.utils.set_random_seed(0)
    grids, probabilities, shown = _photos(SEEN, 400, seed=1)
    vocab = grounding_vocabulary(Vocabulary.build([f"a {WORDS[c]} on grey" for c in SEEN], min_count=1), WORDS)
    assert "zebra" in vocab.tokens and "kite" in vocab.tokens  # only through the tags
    model = build_caption_model(len(vocab), (CELLS + 1, CHANNELS), "grounded", class_words=class_word_ids(vocab, WORDS),
                                class_dim=6, tags=2, **SIZES)
    get_decoder(model).set_class_vectors(np.random.default_rng(2).normal(size=(6, len(WORDS))))
    sequences = [vocab.encode(f"a {WORDS[c]} on grey") for c in shown]
    table = ClassRowTable(grids, probabilities)
    data = caption_dataset(table, np.arange(len(shown)), sequences, batch_size=32, shuffle=True)
    trainer = CaptionTrainer(model, label_smoothing=0.0, attention_reg=0.0)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    trainer.fit(data, epochs=12, verbose=0)
    return model, vocab


def test_copies_words_no_training_caption_wrote(copier):
    """Photos of classes never captioned in training are named by their tag's word, copied, not generated."""
    model, vocab = copier
    grids, probabilities, shown = _photos(NOVEL, 40, seed=3)
    captions = TFSearch(get_decoder(model), vocab).generate(with_class_row(grids, probabilities), GREEDY)
    right = [c.text == f"a {WORDS[cls]} on grey" for c, cls in zip(captions, shown, strict=True)]
    assert sum(right) >= 0.9 * len(right), [c.text for c in captions[:5]]
    for caption, cls in zip(captions, shown, strict=True):
        if WORDS[cls] in caption.words:
            position = caption.words.index(WORDS[cls])
            assert caption.attention[position, -1] > 0.5  # the copy gate at that word, past the grid's cells


def test_without_tags_it_cannot_name_them(copier):
    """The same photos with an empty class row (grounding off): no novel word, so the tags did the naming."""
    model, vocab = copier
    grids, _, _ = _photos(NOVEL, 20, seed=3)
    captions = TFSearch(get_decoder(model), vocab).generate(with_class_row(grids, None), GREEDY)
    assert not any({"zebra", "kite"} & set(c.words) for c in captions)


def test_class_row_carries_the_probabilities():
    grids, probabilities, _ = _photos(SEEN, 3, seed=4)
    rows = with_class_row(grids, probabilities)
    assert rows.shape == (3, CELLS + 1, CHANNELS)
    np.testing.assert_array_equal(rows[:, :CELLS], grids)
    np.testing.assert_array_equal(rows[:, CELLS, : len(WORDS)], probabilities)
    assert not rows[:, CELLS, len(WORDS):].any()
    np.testing.assert_array_equal(ClassRowTable(grids, probabilities)[[2, 0]], rows[[2, 0]])


def test_vocabulary_gains_only_missing_tag_words():
    vocab = Vocabulary.build(["a circle on grey"], min_count=1)
    grown = grounding_vocabulary(vocab, WORDS)
    assert grown.tokens[: len(vocab)] == vocab.tokens  # the caption vocabulary's ids are kept
    assert grown.tokens[len(vocab):] == ["kite", "ring", "square", "star", "zebra"]
    ids = class_word_ids(grown, WORDS)
    assert ids[4] == -1 and [grown.tokens[i] for i in ids if i >= 0] == [w for w in WORDS if w]


def test_grounded_model_learns_shapes_and_exports_with_the_same_captions(grounded_shapes_model, tmp_path):
    """The whole pipeline on the grounded decoder: `captioner train` with EfficientNet-Lite0's tags (class cache,
    grown vocabulary, the classifier's rows), then the saved file captions held-out shapes on the Keras path, and
    its ONNX export gives the same captions, copied words and attention from the same pixels."""
    shapes, result = grounded_shapes_model, grounded_shapes_model["result"]
    assert read_model_info(result.model_path).decoder == "grounded"
    model = captioner.load(result.model_path, result.vocab_path, shapes["weights"], runtime="tensorflow")
    assert "zebra" in model.vocab.tokens  # a tag word no shapes caption writes
    images = sorted(shapes["held_out"])[:12]
    paths = [shapes["folder"] / "images" / name for name in images]
    captions = model.caption_many(paths)
    exact = sum(c.text == shapes["held_out"][name] for name, c in zip(images, captions, strict=True))
    assert exact >= 0.8 * len(images), [c.text for c in captions]
    assert all(c.copied is not None and c.attention.shape == (len(c.words), 49) for c in captions)
    folder = export_model(result.model_path, result.vocab_path, "onnx", tmp_path / "onnx", shapes["weights"])
    portable = captioner.load(folder)
    for options in (DecodeOptions(), GREEDY, DecodeOptions(grounding="off")):
        ours, theirs = portable.caption_many(paths, options), model.caption_many(paths, options)
        assert [c.text for c in ours] == [c.text for c in theirs]
        np.testing.assert_allclose([c.confidence for c in ours], [c.confidence for c in theirs], atol=1e-3)
        for mine, keras_caption in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(mine.copied, keras_caption.copied)
            np.testing.assert_allclose(mine.attention, keras_caption.attention, atol=1e-3)


def test_copied_marks_the_tag_words_a_caption_writes():
    """A grounded model writes its photo's tag words only by copying: those words are marked copied and ground the
    caption; the attention loses the copy gate's column; without tags nothing is copied."""
    probabilities = np.zeros((1, 1000), np.float32)
    probabilities[0, [c.index for c in imagenet_classes() if c.name == "zebra"]] = 0.9
    for tags, copied in ((probabilities, [0, 1, 0, 0]), (None, [0, 0, 0, 0])):
        caption = Caption("a zebra on grass", ["a", "zebra", "on", "grass"], -2.0, np.full((4, 5), 0.2))
        (marked,) = mark_copied([caption], tags)
        assert marked.copied.tolist() == copied and marked.attention.shape == (4, 4)
        assert marked.grounded_by == (["zebra"] if tags is not None else [])


@pytest.mark.parametrize(("settings", "message"), [
    ({"lang": "zh"}, "English captions with word tokens"),
    ({"encoder": "mobilenet_v2"}, "mobilenet_v2 lacks"),
])
def test_a_grounded_recipe_it_cannot_train_is_one_line(settings, message):
    """Tag words are English and come from an ImageNet classifier: Chinese or MobileNetV2 recipes are refused."""
    with pytest.raises(CaptionerError, match=message):
        TrainConfig(data="x", decoder="grounded", **settings)
