"""Batch captioning and feature extraction on a real local Ray cluster (2 CPUs, one session for the module):
the same rows as local batch mode for 40 Flickr8k photos, resumable, with an unreadable file reported."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

import captioner
from captioner.cli.main import main
from captioner.data.images import find_images
from captioner.errors import CaptionerError
from captioner.features.cache import FeatureCache, ShardWriter
from captioner.serving.shipped import shipped_model_paths

ROOT = Path(__file__).resolve().parent.parent
MODEL, VOCAB = shipped_model_paths("en-mobilenet", ROOT)  # a shipped model on the shared MobileNetV2 weights
BAD = "zz_not_a_photo.jpg"


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster of 2 CPUs for every test here; the engine joins it instead of starting its own."""
    import ray

    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, flickr8k) -> list[Path]:
    """40 real photos and one file that is not an image, in one folder."""
    folder = tmp_path_factory.mktemp("photos")
    for source in sorted((flickr8k / "Images").glob("*.jpg"))[:40]:
        (folder / source.name).symlink_to(source)
    (folder / BAD).write_bytes(b"this is not a JPEG")
    return find_images([str(folder)])


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory, photos, mobilenet_weights) -> tuple[list[str], list]:
    """Local batch mode's rows (sorted) and failures for the same photos: what Ray must reproduce."""
    from captioner.serving.batch import caption_to_file

    out = tmp_path_factory.mktemp("local") / "captions.jsonl"
    model = captioner.load(MODEL, VOCAB, mobilenet_weights)
    report = caption_to_file(model, photos, out, progress=False)
    return sorted(out.read_text(encoding="utf-8").splitlines()), report.failures


def _assert_same_rows(lines: list[str], expected: list[str]) -> None:
    """Same images, captions and n-best in the same order; scores equal up to the last printed digit, since the
    workers batch photos differently from local mode and float sums round differently by batch (and CPU)."""
    got, want = [json.loads(line) for line in sorted(lines)], [json.loads(line) for line in expected]
    assert [(r["image"], r["caption"], [n["caption"] for n in r["n_best"]]) for r in got] == \
        [(r["image"], r["caption"], [n["caption"] for n in r["n_best"]]) for r in want]

    def scores(rows: list[dict]) -> list[float]:
        return [v for r in rows for n in [r, *r["n_best"]] for v in (n["confidence"], n["log_prob"])]

    np.testing.assert_allclose(scores(got), scores(want), rtol=0, atol=2e-4)


@pytest.mark.slow
def test_ray_rows_match_local_mode(ray_cluster, photos, local_rows, mobilenet_weights, tmp_path):
    from captioner.distributed.ray_batch import caption_to_file_ray

    out = tmp_path / "captions.jsonl"
    report = caption_to_file_ray((MODEL, VOCAB, mobilenet_weights), photos, out,
                                 workers=2, progress=False)
    rows, failures = local_rows
    assert report.captioned == 40 and len(rows) == 40
    _assert_same_rows(out.read_text(encoding="utf-8").splitlines(), rows)  # same columns, captions, scores
    assert [(f.path.name, f.reason) for f in report.failures] == [(f.path.name, f.reason) for f in failures]
    assert BAD in report.failures[0].reason and "not an image" in report.failures[0].reason


@pytest.mark.slow
def test_ray_cli_resumes_and_lists_the_bad_file(ray_cluster, photos, local_rows, mobilenet_weights, tmp_path,
                                               capsys):
    out = tmp_path / "captions.jsonl"
    rows, _ = local_rows
    by_image = {json.loads(r)["image"]: r for r in rows}
    done = [by_image[str(p)] for p in photos[:15]]
    out.write_text("\n".join(done) + "\n" + by_image[str(photos[15])][:40], encoding="utf-8")  # + a cut line
    code = main(["caption", str(photos[0].parent), "--output", str(out), "--engine", "ray", "--workers", "1",
                 "--model", str(MODEL), "--encoder-weights", str(mobilenet_weights)])
    printed = capsys.readouterr()
    assert code == 1  # one image could not be captioned: reported, not fatal for the others
    assert "25 images captioned" in printed.out and "(15 were already there)" in printed.out
    assert f"skipped {photos[0].parent / BAD}: not an image" in printed.err
    _assert_same_rows(out.read_text(encoding="utf-8").splitlines(), rows)


@pytest.mark.slow
def test_ray_extraction_fills_the_same_cache_and_resumes(ray_cluster, photos, mobilenet_weights, tmp_path):
    from captioner.distributed.ray_extract import extract_ray
    from captioner.features.encoders import ImageEncoder

    encoder = ImageEncoder("mobilenet_v2", mobilenet_weights)
    local = FeatureCache(tmp_path / "local", "mobilenet_v2", 224)
    assert [f.path.name for f in local.extract(photos, encoder, progress=False)] == [BAD]
    expected = local.load(photos[:40])  # (40, 49, 1280)

    cache = FeatureCache(tmp_path / "ray", "mobilenet_v2", 224)
    interrupted = ShardWriter(cache, cache.missing(photos))  # a run killed after its first batch
    interrupted.write(np.arange(32), expected[:32])
    interrupted.close()
    failures = extract_ray(cache, photos, "mobilenet_v2", mobilenet_weights, workers=2, progress=False)
    assert [f.path.name for f in failures] == [BAD] and "not an image" in failures[0].reason
    shards = sorted(len(json.loads(p.read_text())["keys"]) for p in cache.dir.glob("*.json"))
    assert shards == [9, 41]  # the 32 done rows were kept; only the other 9 images went to the workers
    assert np.array_equal(FeatureCache(tmp_path / "ray", "mobilenet_v2", 224).load(photos[:40]), expected)
    assert [p.name for p in FeatureCache(tmp_path / "ray", "mobilenet_v2", 224).missing(photos)] == [BAD]


def test_missing_ray_is_a_one_line_error(monkeypatch):
    from captioner.distributed import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(CaptionerError, match=r"pip install captioner\[ray\]"):
        require_ray()


def test_ray_engine_needs_an_output_file(capsys):
    assert main(["caption", "photo.jpg", "--engine", "ray"]) == 1
    assert "--engine ray writes its captions to a file" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_extraction_caches_the_classifier_probabilities_too(ray_cluster, photos, tmp_path):
    """An encoder with an ImageNet head: the workers return its probabilities with the grids, into the companion
    cache, as local extraction writes them."""
    from captioner.distributed.ray_extract import extract_ray
    from captioner.features.efficientnet_lite import build_lite
    from captioner.features.encoders import ImageEncoder

    weights = tmp_path / "lite0.weights.h5"
    build_lite("efficientnet_lite0").save_weights(weights)  # the same (random) network in every actor
    some = photos[:12]
    local = FeatureCache(tmp_path / "local", "efficientnet_lite0", 224)
    local.extract(some, ImageEncoder("efficientnet_lite0", weights), progress=False)
    cache = FeatureCache(tmp_path / "ray", "efficientnet_lite0", 224)
    extract_ray(cache, some, "efficientnet_lite0", weights, workers=2, progress=False)
    np.testing.assert_allclose(cache.load(some), local.load(some), atol=1e-2)  # (12, 49, 1280) float16
    probabilities = cache.class_cache().load(some)  # (12, 1000)
    assert probabilities.shape == (12, 1000)
    np.testing.assert_allclose(probabilities, local.class_cache().load(some), atol=1e-3)
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(1), 1.0, atol=1e-2)
