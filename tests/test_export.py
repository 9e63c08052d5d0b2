"""`captioner export` and the portable runtime on a real export: the captions, confidences and attention of the
exported model equal the Keras model's, and captioning from the folder never imports TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT

import captioner
from captioner.cli.main import main
from captioner.decoding.options import DecodeOptions
from captioner.export import export_model
from captioner.portable.model import PortableCaptioner

SEARCHES = {"greedy": DecodeOptions(beam_size=1), "beam 3": DecodeOptions(beam_size=3, n_best=3),
            "beam 3, repeats allowed, no length penalty": DecodeOptions(beam_size=3, n_best=2, length_penalty=0.0,
                                                                       block_repeats=False)}
#: Raises ImportError for TensorFlow and Keras, as on a machine that has neither.
NO_TENSORFLOW = textwrap.dedent("""
    import sys
    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "h5py"):
                raise ImportError(f"{name} is not installed here")
    sys.meta_path.insert(0, Refuse())
""")


@pytest.fixture(scope="module")
def exported(shapes_model, tmp_path_factory):
    """The synthetic-shapes model exported to ONNX, and the Keras model it came from."""
    result = shapes_model["result"]
    folder = export_model(result.model_path, result.vocab_path, "onnx", tmp_path_factory.mktemp("export") / "onnx",
                          shapes_model["weights"])
    keras_model = captioner.load(result.model_path, result.vocab_path, encoder_weights=shapes_model["weights"])
    return folder, keras_model


def _photos(shapes_model, flickr8k=None) -> list:
    shapes = [shapes_model["folder"] / "images" / name for name in sorted(shapes_model["held_out"])[:12]]
    return shapes + (sorted((flickr8k / "Images").glob("*.jpg"))[:6] if flickr8k else [])


def _assert_same_captions(portable, keras_model, features) -> None:
    """Every search gives the same captions, n-best lists, confidences and attention on both models."""
    for name, options in SEARCHES.items():
        ours, theirs = portable.caption_features(features, options), keras_model.caption_features(features, options)
        assert [[c.text for c in x.ranked] for x in ours] == [[c.text for c in x.ranked] for x in theirs], name
        np.testing.assert_allclose([c.confidence for x in ours for c in x.ranked],
                                   [c.confidence for x in theirs for c in x.ranked], atol=1e-3, err_msg=name)
        for mine, keras_caption in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(mine.attention, keras_caption.attention, atol=1e-3)


def test_exported_captions_equal_the_keras_models(exported, shapes_model, flickr8k):
    """Synthetic test shapes and real dev photos: same features, same captions and n-best lists, same confidences."""
    folder, keras_model = exported
    portable = captioner.load(folder)
    assert type(portable).__name__ == "PortableCaptioner" and portable.runtime == "onnx"
    photos = _photos(shapes_model, flickr8k)
    features = keras_model.encode(photos)
    np.testing.assert_allclose(portable.encode(photos), features, atol=1e-3)
    _assert_same_captions(portable, keras_model, features)
    held_out = shapes_model["held_out"]
    right = sum(portable.caption(shapes_model["folder"] / "images" / name).text == text
                for name, text in held_out.items())
    assert right >= len(held_out) // 2, "the exported model should still caption the shapes it learned"


@pytest.mark.parametrize("fmt", ["litert", "savedmodel"])
def test_litert_and_savedmodel_exports_caption_like_the_keras_model(fmt, exported, shapes_model, tmp_path):
    """The other two formats on their own runtimes (LiteRT's interpreter; TensorFlow for a SavedModel): the
    same features, captions, n-best lists, confidences and attention as the Keras model."""
    result = shapes_model["result"]
    folder = export_model(result.model_path, result.vocab_path, fmt, tmp_path / fmt, shapes_model["weights"])
    keras_model = exported[1]
    portable = captioner.load(folder)
    assert portable.runtime == fmt
    photos = _photos(shapes_model)
    features = keras_model.encode(photos)
    np.testing.assert_allclose(portable.encode(photos), features, atol=1e-3)
    _assert_same_captions(portable, keras_model, features)


def test_the_folder_captions_without_tensorflow(exported, shapes_model):
    """`captioner.load(folder)` and `captioner caption --model folder` in a process where importing TensorFlow,
    Keras, tf2onnx or h5py fails: greedy, beam with n-best and attention all work."""
    folder, keras_model = exported
    photo = _photos(shapes_model)[0]
    script = NO_TENSORFLOW + textwrap.dedent(f"""
        import json, sys
        import captioner
        from captioner.cli.main import main
        model = captioner.load({str(folder)!r})
        best = model.caption({str(photo)!r}, captioner.DecodeOptions(beam_size=3, n_best=2))
        greedy = model.caption({str(photo)!r}, captioner.GREEDY)
        print(json.dumps([best.text, [c.text for c in best.ranked], greedy.text, best.attention.shape[1]]))
        sys.stdout.flush()
        code = main(["caption", {str(photo)!r}, "--model", {str(folder)!r}, "--beam", "1"])
        assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules), "TensorFlow was imported"
        sys.exit(code)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    text, n_best, greedy, cells = json.loads(lines[0])
    expected = keras_model.caption(photo, DecodeOptions(beam_size=3, n_best=2))
    assert (text, n_best) == (expected.text, [c.text for c in expected.ranked])
    assert greedy == lines[1] == keras_model.caption(photo, DecodeOptions(beam_size=1)).text
    assert cells == int(np.prod(keras_model.grid_shape))


def test_an_unknown_format_is_one_line(capsys, tmp_path):
    assert main(["export", "mymodel.h5", "--format", "tflite", "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["captioner: error: unknown export format 'tflite'; choose one of onnx, litert, savedmodel."]
    assert not (tmp_path / "out").exists()


def test_export_will_not_replace_a_folder_that_is_not_an_export(shapes_model, tmp_path, capsys):
    result = shapes_model["result"]
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "keep.jpg").write_bytes(b"mine")
    assert main(["export", str(result.model_path), "--output", str(tmp_path / "photos"), "--encoder-weights",
                 str(shapes_model["weights"])]) == 1
    assert "is not an exported captioner" in capsys.readouterr().err
    assert (tmp_path / "photos" / "keep.jpg").read_bytes() == b"mine"


@pytest.mark.parametrize("argv, message", [
    (["--quantize", "int4"], "unknown quantization 'int4'; choose int8 or leave it out."),
    (["--quantize", "int8", "--format", "litert"],
     "--quantize int8 is for --format onnx (ONNX Runtime's int8 kernels); export litert without it.")])
def test_an_unsupported_quantization_is_one_line(argv, message, capsys, tmp_path):
    assert main(["export", "mymodel.h5", "--output", str(tmp_path / "out"), *argv]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"captioner: error: {message}"]
    assert not (tmp_path / "out").exists()


def test_an_int8_export_stores_int8_weights_and_captions_like_the_float_one(exported, shapes_model, tmp_path):
    """--quantize int8: the decoder's files hold int8 weights (under a third of the float size) and the
    captions of the shapes stay the Keras model's, with confidences close to its."""
    import onnx

    folder, keras_model = exported
    result = shapes_model["result"]
    assert main(["export", str(result.model_path), "--quantize", "int8", "--output", str(tmp_path / "int8"),
                 "--encoder-weights", str(shapes_model["weights"])]) == 0
    int8 = captioner.load(tmp_path / "int8")
    assert int8.manifest.extra == {"quantized": "int8"}
    assert int8.decoder._step.pooled is int8.decoder._step.single  # int8 products ran slower on two threads
    for name in ("prepare", "step"):
        graph = onnx.load(tmp_path / "int8" / f"{name}.onnx").graph
        assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer), name
        assert (tmp_path / "int8" / f"{name}.onnx").stat().st_size < (folder / f"{name}.onnx").stat().st_size / 3
    features = keras_model.encode(_photos(shapes_model))
    for options in (DecodeOptions(beam_size=1), DecodeOptions(beam_size=3)):
        ours, theirs = int8.caption_features(features, options), keras_model.caption_features(features, options)
        assert sum(o.text == t.text for o, t in zip(ours, theirs, strict=True)) >= len(theirs) - 1
        np.testing.assert_allclose([o.confidence for o in ours], [t.confidence for t in theirs], atol=0.05)


def test_steps_over_several_rows_run_on_the_thread_pool_with_the_same_results(exported, shapes_model):
    """A float32 export steps one row on one thread and several (beam search) on the pool, which changes no
    caption or score; threads=1 keeps every step on one thread."""
    folder, keras_model = exported
    pooled, single = PortableCaptioner(folder, threads=2), PortableCaptioner(folder, threads=1)
    step = pooled.decoder._step
    assert [f.session.get_session_options().intra_op_num_threads for f in (step.single, step.pooled)] == [1, 2]
    assert single.decoder._step.pooled is single.decoder._step.single
    features = keras_model.encode(_photos(shapes_model))
    for options in (DecodeOptions(beam_size=1), DecodeOptions(beam_size=3, n_best=3)):
        ours, theirs = pooled.caption_features(features, options), single.caption_features(features, options)
        assert [[c.text for c in x.ranked] for x in ours] == [[c.text for c in x.ranked] for x in theirs]
        np.testing.assert_allclose([c.log_prob for x in ours for c in x.ranked],
                                   [c.log_prob for x in theirs for c in x.ranked], atol=1e-5)


def test_evaluate_scores_an_exported_folder(exported, shapes_model, tmp_path, capsys):
    """`captioner evaluate --model FOLDER` extracts features with the exported encoder and decodes with the
    exported decoder: the same metrics as the Keras model's to the printed digit."""
    folder, _ = exported
    result = shapes_model["result"]
    data = ["--data", str(shapes_model["folder"] / "captions.csv"), "--split", "test", "--fast"]
    assert main(["evaluate", *data, "--model", str(folder), "--cache-dir", str(tmp_path / "portable"),
                 "--output", str(tmp_path / "portable.json")]) == 0
    assert main(["evaluate", *data, "--model", str(result.model_path), "--tokenizer", str(result.vocab_path),
                 "--encoder-weights", str(shapes_model["weights"]), "--cache-dir", str(tmp_path / "keras"),
                 "--output", str(tmp_path / "keras.json")]) == 0
    assert "test beam 3" in capsys.readouterr().out
    assert any((tmp_path / "portable").rglob("*.json")), "the exported encoder filled the feature cache"
    portable, keras_scores = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("portable", "keras"))
    assert portable["test beam 3"]["BLEU-4"] > 0.8
    for row, scores in keras_scores.items():
        assert portable[row] == pytest.approx(scores, abs=1e-3), row
