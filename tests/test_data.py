"""Dataset readers: every supported layout, splits, and bad rows reported with file and line."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from captioner.data.datasets import load_dataset, seeded_split
from captioner.errors import DataError


def _images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8), "red").save(folder / name)


def test_kaggle_layout_with_split_lists(tmp_path):
    _images(tmp_path / "Images", ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "captions.txt").write_text(
        'image,caption\na.jpg,A dog runs .\na.jpg,"A dog, brown, runs"\nb.jpg,A cat sits\nc.jpg,A bird\n')
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("a.jpg\nb.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("c.jpg\n")
    data = load_dataset(tmp_path)
    assert data.captions["a.jpg"] == ["A dog runs .", "A dog, brown, runs"]
    assert data.split("train") == ["a.jpg", "b.jpg"] and data.split("dev") == ["c.jpg"]
    assert data.items("dev") == [(tmp_path / "Images" / "c.jpg", ["A bird"])]
    assert not data.problems


def test_kaggle_language_file(tmp_path):
    _images(tmp_path / "Images", ["a.jpg"])
    (tmp_path / "captions_zh.txt").write_text("image,caption\na.jpg,一只狗在草地上奔跑。\n", encoding="utf-8")
    data = load_dataset(tmp_path, lang="zh")
    assert data.captions["a.jpg"] == ["一只狗在草地上奔跑。"]
    with pytest.raises(DataError, match=r"captions_de\.txt"):
        load_dataset(tmp_path, lang="de")


def test_original_flickr8k_token_file(tmp_path):
    _images(tmp_path / "Flicker8k_Dataset", ["x.jpg", "y.jpg"])
    (tmp_path / "Flickr8k.token.txt").write_text(
        "x.jpg#0\tA man surfs .\nx.jpg#1\tSurfer on a wave\nbroken line without tab\ny.jpg#0\tTwo kids\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("x.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("y.jpg\n")
    data = load_dataset(tmp_path)
    assert data.captions == {"x.jpg": ["A man surfs .", "Surfer on a wave"], "y.jpg": ["Two kids"]}
    assert [str(p) for p in data.problems] == ["Flickr8k.token.txt:3: expected 'image.jpg#N<TAB>caption'"]


def test_karpathy_json(tmp_path):
    _images(tmp_path / "Images", ["p.jpg", "q.jpg", "r.jpg"])
    entries = [{"filename": n, "split": s, "sentences": [{"raw": f"caption of {n}", "tokens": []}]}
               for n, s in (("p.jpg", "train"), ("q.jpg", "val"), ("r.jpg", "restval"))]
    entries.append({"split": "test"})  # malformed: no filename
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps({"images": entries}))
    data = load_dataset(tmp_path)
    assert data.split("train") == ["p.jpg", "r.jpg"] and data.split("dev") == ["q.jpg"]
    assert "images[3]" in str(data.problems[0])


def test_coco_captions_json(tmp_path):
    _images(tmp_path / "train2014", ["1.jpg", "2.jpg"])
    _images(tmp_path / "val2014", ["3.jpg"])
    (tmp_path / "annotations").mkdir()
    for folder, ids in (("train2014", (1, 2)), ("val2014", (3,))):
        (tmp_path / "annotations" / f"captions_{folder}.json").write_text(json.dumps({
            "images": [{"id": i, "file_name": f"{i}.jpg"} for i in ids],
            "annotations": [{"image_id": i, "caption": f"photo {i}"} for i in ids] + [{"image_id": 99}]}))
    data = load_dataset(tmp_path)
    assert data.split("train") == ["train2014/1.jpg", "train2014/2.jpg"]
    assert data.split("dev") == ["val2014/3.jpg"]
    assert data.path("val2014/3.jpg").is_file()
    assert len(data.problems) == 2


def test_plain_csv_and_tsv_get_seeded_split(tmp_path):
    names = [f"{i}.png" for i in range(20)]
    _images(tmp_path / "pics", names)
    (tmp_path / "caps.tsv").write_text("".join(f"{n}\tcaption number {n}\n" for n in names))
    data = load_dataset(tmp_path / "caps.tsv", images=tmp_path / "pics", seed=3)
    assert sorted(data.split("train") + data.split("dev") + data.split("test")) == sorted(names)
    assert len(data.split("dev")) == 2 and len(data.split("test")) == 2
    again = load_dataset(tmp_path / "caps.tsv", images=tmp_path / "pics", seed=3)
    assert again.splits == data.splits  # reproducible


def test_malformed_rows_are_reported_and_skipped(tmp_path):
    _images(tmp_path / "Images", ["ok.jpg"])
    (tmp_path / "captions.txt").write_text(
        "image,caption\nok.jpg,Fine caption\nok.jpg,\nmissing.jpg,Nobody home\nonlyonefield\n,no image\n"
        "ok.jpg,Another fine one\n")
    data = load_dataset(tmp_path)
    assert data.captions == {"ok.jpg": ["Fine caption", "Another fine one"]}
    report = [str(p) for p in data.problems]
    assert report[0] == "captions.txt:3: empty caption for ok.jpg"
    assert report[1].startswith("captions.txt:4: image missing.jpg not found")
    assert report[2].startswith("captions.txt:5: expected image,caption")
    assert report[3] == "captions.txt:6: empty image name"
    assert "skipped 4 bad rows" in data.summary()


def test_unusable_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such dataset"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="no captions found"):
        load_dataset(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        load_dataset(tmp_path / "bad.json")
    _images(tmp_path / "Images", ["a.jpg"])
    (tmp_path / "captions.txt").write_bytes(b"image,caption\na.jpg,caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_dataset(tmp_path)


def test_limit_keeps_first_images_of_each_split(tmp_path):
    names = [f"{i}.png" for i in range(30)]
    _images(tmp_path / "images", names)
    (tmp_path / "c.csv").write_text("image,caption\n" + "".join(f"{n},cap {n}\n" for n in names))
    data = load_dataset(tmp_path / "c.csv").limit(2)
    assert all(len(v) <= 2 for v in data.splits.values())
    assert set(data.captions) == {n for v in data.splits.values() for n in v}


def test_seeded_split_fractions():
    split = seeded_split([str(i) for i in range(100)], seed=1)
    assert [len(split[k]) for k in ("train", "dev", "test")] == [80, 10, 10]


def test_real_flickr8k_layout(flickr8k):
    data = load_dataset(flickr8k)
    assert len(data.split("train")) == 6000 and len(data.split("dev")) == 1000
    assert all(len(data.captions[n]) == 5 for n in data.split("dev"))
    assert not data.problems
