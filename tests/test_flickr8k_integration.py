"""Integration on real photos: MobileNetV2 features of ~40 Flickr8k images, a short training, a caption."""

from __future__ import annotations

import numpy as np
from model_checks import check_caption

import captioner
from captioner.training.run import TrainConfig, train


def test_train_briefly_on_real_images_and_caption_one(flickr8k, mobilenet_weights, tmp_path):
    config = TrainConfig(data=str(flickr8k), output=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
                         encoder="mobilenet_v2", encoder_weights=str(mobilenet_weights), limit=20, min_count=2,
                         epochs=2, batch_size=32, embedding_dim=64, units=128, attention_units=64, patience=2)
    result = train(config, log=lambda message: None)
    cached = list((tmp_path / "cache" / "mobilenet_v2-224").glob("*.npy"))
    features = np.load(next(p for p in cached if not p.name.endswith("done.npy")), mmap_mode="r")
    assert features.shape == (40, 49, 1280)
    features = np.asarray(features, np.float32)
    assert np.isfinite(features).all() and features.std() > 0.1
    assert result.history["loss"][1] < result.history["loss"][0]

    model = captioner.load(result.model_path, result.vocab_path, encoder_weights=mobilenet_weights)
    photo = flickr8k / "Images" / "1000268201_693b08cb0e.jpg"
    caption = model.caption(photo)
    assert caption.words, "an empty caption"
    # The caption the saved model wrote: real tokens joined as the vocabulary says, with the log p, confidence
    # and per-word attention of the model's own teacher-forced pass over those words.
    check_caption(caption, model.model, model.vocab, model.encode([photo])[0], model.search.max_length, rtol=1e-3)
