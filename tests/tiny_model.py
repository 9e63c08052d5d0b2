"""A saved random-weight captioner (no training, no downloads) for tests of the surfaces around a model:
writing metadata, the HTTP server. With encoder weights "none" it loads without ImageNet weights."""

from __future__ import annotations

from pathlib import Path

VOCAB_CAPTIONS = ["a dog runs on the grass", "a red circle on a grey background"]


def save_random_model(folder: Path) -> tuple[Path, Path]:
    """mymodel.h5 + tokenizer.pkl of a seeded random model that never ends a caption at once."""
    import keras

    from captioner.artifacts.model_files import ModelInfo, save_model
    from captioner.models.base import build_caption_model, get_decoder
    from captioner.text.vocabulary import Vocabulary

    vocab = Vocabulary.build(VOCAB_CAPTIONS, min_count=1, max_length=6)
    keras.utils.set_random_seed(0)
    model = build_caption_model(len(vocab), (49, 1280), embedding_dim=8, units=16, attention_units=8)
    out_vocab = get_decoder(model).out_vocab
    out_vocab.bias.assign(out_vocab.bias - 5 * keras.ops.one_hot(vocab.end_id, len(vocab)))  # no empty captions
    info = ModelInfo("mobilenet_v2", 224, len(vocab), vocab.fingerprint)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, vocab, info, folder / "mymodel.h5", folder / "tokenizer.pkl")
    return folder / "mymodel.h5", folder / "tokenizer.pkl"
