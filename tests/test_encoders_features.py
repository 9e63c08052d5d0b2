"""Encoders (registry, offline weights) and the resumable on-disk feature cache."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from captioner.errors import CaptionerError, WeightsError
from captioner.features import encoders
from captioner.features.cache import FeatureCache
from captioner.features.encoders import BACKBONES, ImageEncoder


@pytest.fixture(scope="module")
def random_encoder():
    return ImageEncoder("mobilenet_v2", weights=None)


@pytest.mark.parametrize("name, shape", [("mobilenet_v2", (49, 1280)), ("vgg16", (196, 512)),
                                         ("resnet50", (49, 2048)), ("efficientnet_b0", (49, 1280)),
                                         ("inception_v3", (64, 2048))])
def test_every_backbone_gives_a_spatial_grid(name, shape):
    encoder = ImageEncoder(name, weights=None)
    assert encoder.feature_shape == shape
    size = BACKBONES[name].image_size
    features = encoder(np.zeros((2, size, size, 3), np.uint8))
    assert features.shape == (2, *shape)


def test_offline_without_weights_names_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", offline)
    with pytest.raises(WeightsError) as caught:
        ImageEncoder("mobilenet_v2")
    message = str(caught.value)
    assert BACKBONES["mobilenet_v2"].weights_file in message
    assert str(tmp_path / "models") in message and "--encoder-weights" in message


def test_weights_found_in_keras_cache(tmp_path, monkeypatch, mobilenet_weights):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / mobilenet_weights.name).symlink_to(mobilenet_weights)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert encoders.resolve_weights(BACKBONES["mobilenet_v2"], "imagenet") == str(
        tmp_path / "models" / mobilenet_weights.name)


def test_bad_weights_arguments(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        ImageEncoder("mobilenet_v2", weights=tmp_path / "missing.h5")
    (tmp_path / "broken.h5").write_bytes(b"nope")
    with pytest.raises(WeightsError, match="cannot load encoder weights"):
        ImageEncoder("mobilenet_v2", weights=tmp_path / "broken.h5")
    with pytest.raises(WeightsError, match=r"unknown encoder 'alexnet'.*mobilenet_v2"):
        ImageEncoder("alexnet")


def test_pretrained_features_tell_colours_apart(mobilenet_weights):
    encoder = ImageEncoder("mobilenet_v2", weights=mobilenet_weights)
    images = np.stack([np.full((224, 224, 3), colour, np.uint8)
                       for colour in ((255, 0, 0), (250, 5, 5), (0, 0, 255))])
    mean = encoder(images).mean(axis=1)
    assert np.linalg.norm(mean[0] - mean[1]) < np.linalg.norm(mean[0] - mean[2])


def test_captioners_on_one_cnn_share_its_encoder(mobilenet_weights, tmp_path):
    """The app's languages run on one MobileNetV2; a missing file is an error on every call, never cached."""
    first = encoders.shared_encoder("mobilenet_v2", mobilenet_weights)
    assert encoders.shared_encoder("mobilenet_v2", str(mobilenet_weights)) is first
    for _ in range(2):
        with pytest.raises(WeightsError, match="not found"):
            encoders.shared_encoder("mobilenet_v2", tmp_path / "missing.h5")


def _write_images(folder, n):
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.new("RGB", (50, 40), (i * 20 % 255, 100, 200)).save(path)
        paths.append(path)
    return paths


def test_cache_stores_what_the_encoder_computes(tmp_path, random_encoder):
    paths = _write_images(tmp_path / "img", 5)
    cache = FeatureCache(tmp_path / "cache", "mobilenet_v2", 224)
    assert cache.extract(paths, random_encoder, batch_size=2, progress=False) == []
    cached = cache.load(paths[::-1])
    assert cached.shape == (5, 49, 1280) and cached.dtype == np.float16
    from captioner.data.images import load_array

    direct = random_encoder(np.stack([load_array(p, (224, 224)) for p in paths[::-1]]))
    np.testing.assert_allclose(cached, direct, rtol=1e-2, atol=1e-2)
    assert cache.missing(paths) == []
    assert FeatureCache(tmp_path / "cache", "mobilenet_v2", 224).missing(paths) == []  # persisted


class _CountingEncoder:
    """The real encoder, counting images; optionally interrupted like Ctrl-C after some batches."""

    def __init__(self, encoder, interrupt_after=None):
        self.encoder, self.interrupt_after, self.calls, self.images = encoder, interrupt_after, 0, 0
        self.name, self.image_size, self.feature_shape = encoder.name, encoder.image_size, encoder.feature_shape
        self.classifier = encoder.classifier

    def __call__(self, images):
        return self.encode_and_classify(images)[0]

    def encode_and_classify(self, images):
        if self.interrupt_after is not None and self.calls == self.interrupt_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.images += len(images)
        return self.encoder.encode_and_classify(images)


def test_interrupted_extraction_resumes_without_redoing_work(tmp_path, random_encoder):
    paths = _write_images(tmp_path / "img", 10)
    cache = FeatureCache(tmp_path / "cache", "mobilenet_v2", 224)
    with pytest.raises(KeyboardInterrupt):
        cache.extract(paths, _CountingEncoder(random_encoder, interrupt_after=2), batch_size=3, progress=False)
    fresh = FeatureCache(tmp_path / "cache", "mobilenet_v2", 224)
    assert len(fresh.missing(paths)) == 4  # two batches of three were written
    counter = _CountingEncoder(random_encoder)
    fresh.extract(paths, counter, batch_size=3, progress=False)
    assert counter.images == 4
    assert fresh.load(paths).shape == (10, 49, 1280)


def test_unreadable_images_are_reported_and_skipped(tmp_path, random_encoder):
    paths = _write_images(tmp_path / "img", 3)
    (tmp_path / "img" / "bad.jpg").write_bytes(b"garbage")
    cache = FeatureCache(tmp_path / "cache", "mobilenet_v2", 224)
    failures = cache.extract([*paths, tmp_path / "img" / "bad.jpg"], random_encoder, progress=False)
    assert [f.path.name for f in failures] == ["bad.jpg"] and "not an image" in failures[0].reason
    assert cache.missing([*paths, tmp_path / "img" / "bad.jpg"]) == [tmp_path / "img" / "bad.jpg"]
    with pytest.raises(CaptionerError, match="no cached features"):
        cache.load([tmp_path / "img" / "bad.jpg"])
