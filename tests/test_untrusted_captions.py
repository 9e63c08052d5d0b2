"""Hostile captions files: each bad row is reported with file and line and skipped, the rest is loaded,
nothing raises for a row, and no image name reaches a file outside the images folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from captioner.data.datasets import load_dataset
from captioner.data.readers import MAX_CAPTION_CHARS
from captioner.errors import DataError

GOOD = ["a.jpg,A dog runs on the grass", "b.jpg,A cat sits on a mat"]


def _dataset(tmp_path: Path, *middle: bytes, captions: str = "captions.txt", header: bytes = b"image,caption"
             ) -> Path:
    """A Kaggle-style folder: Images/a.jpg and b.jpg, and a captions file of good rows around `middle`."""
    (tmp_path / "Images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / "Images" / name)
    lines = [header, GOOD[0].encode(), *middle, GOOD[1].encode()]
    (tmp_path / captions).write_bytes(b"\n".join(lines) + b"\n")
    return tmp_path


def _assert_good_rows_kept(data) -> None:
    assert data.captions == {"a.jpg": ["A dog runs on the grass"], "b.jpg": ["A cat sits on a mat"]}


def _secret(tmp_path: Path) -> Path:
    """A readable image outside the dataset folder, which no captions file may reach."""
    secret = tmp_path.parent / f"{tmp_path.name}-secret.jpg"
    Image.new("RGB", (8, 8), "blue").save(secret)
    return secret


def test_a_10_mb_line_is_reported_and_skipped(tmp_path):
    data = load_dataset(_dataset(tmp_path, b"a.jpg," + b"x" * 10_000_000))
    _assert_good_rows_kept(data)
    [problem] = data.problems
    assert (problem.source, problem.line) == ("captions.txt", 3)
    assert "10,000,006 bytes" in problem.message


def test_a_10_mb_line_in_a_flickr8k_token_file(tmp_path):
    (tmp_path / "Images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "Images" / "a.jpg")
    (tmp_path / "Flickr8k.token.txt").write_bytes(
        b"a.jpg#0\tA dog\na.jpg#1\t" + b"y " * 5_000_000 + b"\na.jpg#2\tA brown dog\n")
    data = load_dataset(tmp_path)
    assert data.captions == {"a.jpg": ["A dog", "A brown dog"]}
    assert [(p.source, p.line) for p in data.problems] == [("Flickr8k.token.txt", 2)]


def test_nul_bytes_are_reported_and_skipped(tmp_path):
    data = load_dataset(_dataset(tmp_path, b"a.jpg,A dog\x00 runs", b"a\x00.jpg,A caption"))
    _assert_good_rows_kept(data)
    assert [(p.line, "NUL" in p.message) for p in data.problems] == [(3, True), (4, True)]


def test_nul_characters_from_json_are_refused(tmp_path):
    (tmp_path / "Images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "Images" / "a.jpg")
    sentences = [{"raw": "A dog\u0000 runs"}, {"raw": "A dog runs"}]
    images = [{"filename": "a.jpg", "sentences": sentences}, {"filename": "a\u0000.jpg", "sentences": sentences}]
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps({"images": images}))
    data = load_dataset(tmp_path)
    assert data.captions == {"a.jpg": ["A dog runs"]}
    assert len(data.problems) == 3 and all("control characters" in p.message for p in data.problems)


def test_invalid_utf8_rows_are_reported_and_skipped(tmp_path):
    data = load_dataset(_dataset(tmp_path, b"a.jpg,caf\xe9 au lait", b"b.jpg,\xff\xfe broken"))
    _assert_good_rows_kept(data)
    assert [str(p) for p in data.problems] == [
        "captions.txt:3: not UTF-8 text (byte 0xe9 at column 10); save the file as UTF-8",
        "captions.txt:4: not UTF-8 text (byte 0xff at column 7); save the file as UTF-8"]


def test_a_10000_word_caption_is_reported_and_skipped(tmp_path):
    long_caption = " ".join(["dog"] * 10_000)
    data = load_dataset(_dataset(tmp_path, f"a.jpg,{long_caption}".encode()))
    _assert_good_rows_kept(data)
    [problem] = data.problems
    assert problem.line == 3 and f"more than the {MAX_CAPTION_CHARS:,}" in problem.message
    assert len(str(problem)) < 300  # the report names the row, it does not repeat it


def test_a_caption_longer_than_max_length_but_within_the_limit_is_kept(tmp_path):
    caption = " ".join(["dog"] * 200)  # far past any max_length: the vocabulary truncates it, the row stays
    data = load_dataset(_dataset(tmp_path, f"a.jpg,{caption}".encode()))
    assert data.captions["a.jpg"] == ["A dog runs on the grass", caption] and not data.problems


def test_unbalanced_quotes_lose_only_their_row(tmp_path):
    data = load_dataset(_dataset(tmp_path, b'a.jpg,"A dog runs', b'b.jpg,"A cat, grey" sits'))
    assert data.captions == {"a.jpg": ["A dog runs on the grass"],
                             "b.jpg": ["A cat, grey sits", "A cat sits on a mat"]}  # a stray quote reads as before
    [problem] = data.problems
    assert (problem.line, problem.message) == (3, 'unbalanced quotes: a quoted field (") is never closed')


def test_a_quoted_caption_over_two_lines_still_reads(tmp_path):
    data = load_dataset(_dataset(tmp_path, b'a.jpg,"A dog', b'on two lines"'))
    assert data.captions["a.jpg"] == ["A dog runs on the grass", "A dog on two lines"] and not data.problems


@pytest.mark.parametrize("name", ["../" * 30 + "etc/passwd", "../{secret}", "{secret_abs}", "Images/../../{secret}"])
def test_image_paths_outside_the_images_folder_are_refused(tmp_path, name):
    secret = _secret(tmp_path)
    name = name.format(secret=secret.name, secret_abs=secret)
    data = load_dataset(_dataset(tmp_path, f"{name},A stolen file".encode(), f"{name},Again".encode()))
    _assert_good_rows_kept(data)
    [problem] = data.problems  # reported once per name
    assert problem.line == 3 and "outside the images folder" in problem.message and "refused" in problem.message


def test_an_absolute_path_inside_the_images_folder_is_kept(tmp_path):
    inside = tmp_path / "Images" / "a.jpg"
    data = load_dataset(_dataset(tmp_path, f"{inside},An absolute name".encode()))
    assert data.captions[str(inside)] == ["An absolute name"] and not data.problems


@pytest.mark.parametrize("layout", ["token", "karpathy", "coco"])
def test_traversal_is_refused_in_every_layout(tmp_path, layout):
    secret = _secret(tmp_path)
    (tmp_path / "Images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "Images" / "a.jpg")
    escape = f"../{secret.name}"
    if layout == "token":
        (tmp_path / "Flickr8k.token.txt").write_text(f"a.jpg#0\tA dog\n{escape}#0\tStolen\n")
    elif layout == "karpathy":
        images = [{"filename": name, "sentences": [{"raw": "A dog"}]} for name in ("a.jpg", escape)]
        (tmp_path / "dataset_flickr8k.json").write_text(json.dumps({"images": images}))
    else:  # COCO: images live in <folder>/ beside annotations/
        (tmp_path / "annotations").mkdir()
        (tmp_path / "annotations" / "captions_Images.json").write_text(json.dumps({
            "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": f"../../{secret.name}"}],
            "annotations": [{"image_id": 1, "caption": "A dog"}, {"image_id": 2, "caption": "Stolen"}]}))
    data = load_dataset(tmp_path)
    assert [caption for captions in data.captions.values() for caption in captions] == ["A dog"]
    [problem] = data.problems
    assert "outside the images folder" in problem.message


def test_a_file_of_nothing_but_hostile_rows_is_one_clear_error(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "captions.txt").write_bytes(b"image,caption\n" + b"\xff\x00" * 100 + b"\n/etc/passwd,x\n")
    with pytest.raises(DataError, match="no image to use: none of the 1 images"):
        load_dataset(tmp_path)


def test_extract_reports_hostile_rows_and_caches_the_rest(tmp_path, capsys):
    from captioner.cli.main import main

    (tmp_path / "data").mkdir()
    folder = _dataset(tmp_path / "data", b"a.jpg," + b"x" * 200_000, b"../../etc/passwd,A stolen file",
                      b'b.jpg,"never closed', b"a.jpg,\xff")
    code = main(["extract", "--data", str(folder), "--encoder-weights", "none", "--cache-dir", str(tmp_path / "c")])
    out, err = capsys.readouterr()
    assert code == 0, err
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert [line.split(": ")[0] for line in skipped] == [f"skipped captions.txt:{n}" for n in (3, 4, 5, 6)]
    assert "2 images cached" in out and "skipped 4 bad rows" in out
