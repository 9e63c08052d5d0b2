"""`captioner caption --write xmp|embed|txt` and `captioner write --from`, read back by ExifTool, an independent
reader: every field written, pixels byte-identical, other metadata kept, the original intact on a failure."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import in_ci
from PIL import Image
from tiny_model import save_random_model

from captioner.cli.main import main
from captioner.data.images import IMAGE_EXTENSIONS
from captioner.serving.metadata import ExifTool, MetadataError, Writer

if shutil.which("exiftool") is None:
    if in_ci():
        raise RuntimeError("exiftool is missing: apt-get install libimage-exiftool-perl (.ci/run installs it)")
    pytest.skip("exiftool is not installed (apt-get install libimage-exiftool-perl)", allow_module_level=True)

FORMATS = [".jpg", ".png", ".webp", ".tif", ".heic"]


@pytest.fixture(scope="module")
def model_args(tmp_path_factory) -> list[str]:
    model, tokenizer = save_random_model(tmp_path_factory.mktemp("model"))
    return ["--model", str(model), "--tokenizer", str(tokenizer), "--encoder-weights", "none"]


@pytest.fixture
def photos(tmp_path) -> Path:
    """One photo per format, each with a camera make in its EXIF (metadata that must survive)."""
    assert ".heic" in IMAGE_EXTENSIONS, "pillow-heif is not installed"
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, suffix in enumerate(FORMATS):
        pixels = np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8)
        exif = Image.Exif()
        exif[0x010F] = "TestCam"  # Make
        Image.fromarray(pixels).save(folder / f"photo{i}{suffix}", exif=exif.tobytes())
    return folder


def exiftool_json(*args: str) -> list[dict]:
    """ExifTool's own reading, as JSON, with group names (e.g. "XMP-dc:Description")."""
    out = subprocess.run(["exiftool", "-j", "-G1", "-a", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def captions_of(folder: Path, model_args: list[str], capsys) -> dict[str, str]:
    """What `captioner caption --json` says for each image, by path."""
    assert main(["caption", str(folder), *model_args, "--json"]) == 0
    return {r["image"]: r["caption"] for r in map(json.loads, capsys.readouterr().out.splitlines())}


def jpeg_scan(data: bytes) -> bytes:
    """Everything from the first start-of-scan marker: the compressed image data, walked segment by segment so
    an SOS-like byte pair inside EXIF or XMP is never mistaken for it."""
    at = 2
    while data[at + 1] != 0xDA:
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return data[at:]


def png_idat(data: bytes) -> bytes:
    """The concatenated IDAT chunks: the compressed pixel data of a PNG."""
    at, out = 8, b""
    while at < len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        if data[at + 4:at + 8] == b"IDAT":
            out += data[at + 8:at + 8 + length]
        at += 12 + length
    return out


def test_write_xmp_then_exiftool_prints_each_caption(photos, model_args, capsys):
    captions = captions_of(photos, model_args, capsys)
    assert main(["caption", str(photos), *model_args, "--write", "xmp"]) == 0
    assert capsys.readouterr().out.strip() == f"{len(FORMATS)} images written (xmp)"
    read = {Path(r["SourceFile"]).stem: r for r in exiftool_json("-XMP-dc:Description", "-XMP-dc:Description-en",
                                                                  "-ext", "xmp", str(photos))}
    for image, caption in captions.items():
        assert read[Path(image).stem]["XMP-dc:Description"] == caption
        assert read[Path(image).stem]["XMP-dc:Description-en"] == caption
    assert sorted(p.name for p in photos.glob("*.xmp")) == [f"photo{i}.xmp" for i in range(len(FORMATS))]

    assert main(["caption", str(photos), *model_args, "--write", "xmp"]) == 0  # a re-run resumes: nothing to do
    assert "0 images written (xmp), 5 already had a caption" in capsys.readouterr().out


def test_sidecar_naming_photo_jpg_xmp(photos, model_args, capsys):
    assert main(["caption", str(photos / "photo0.jpg"), *model_args, "--write", "xmp", "--sidecar",
                 "photo.jpg.xmp"]) == 0
    assert (photos / "photo0.jpg.xmp").is_file() and not (photos / "photo0.xmp").exists()


def test_an_existing_sidecar_is_merged_and_round_trips(photos, model_args, capsys):
    image, sidecar = photos / "photo0.jpg", photos / "photo0.xmp"
    subprocess.run(["exiftool", "-q", "-o", str(sidecar), "-XMP-dc:Creator=Ada", "-XMP-xmp:Rating=4",
                    "-XMP-dc:Description=written by a person"], check=True)
    assert main(["caption", str(image), *model_args, "--write", "xmp"]) == 0
    assert "already had a caption" in capsys.readouterr().out
    assert exiftool_json(str(sidecar))[0]["XMP-dc:Description"] == "written by a person"  # never clobbered

    caption = captions_of(image, model_args, capsys)[str(image)]
    for _ in range(2):  # the second write reads back the first one's sidecar and writes it again
        assert main(["caption", str(image), *model_args, "--write", "xmp", "--overwrite"]) == 0
        tags = exiftool_json(str(sidecar))[0]
        assert (tags["XMP-dc:Description"], tags["XMP-dc:Creator"], tags["XMP-xmp:Rating"]) == (caption, "Ada", 4)


def test_embed_keeps_pixels_and_other_metadata(photos, model_args, capsys):
    captions = captions_of(photos, model_args, capsys)
    before = {p: p.read_bytes() for p in photos.iterdir()}
    pixels = {p: np.asarray(Image.open(p)) for p in before}
    assert main(["caption", str(photos), *model_args, "--write", "embed"]) == 0
    assert capsys.readouterr().out.strip() == f"{len(FORMATS)} images written (embed)"
    assert sorted(photos.iterdir()) == sorted(before)  # no sidecar, no temp file left behind
    for path, data in before.items():
        after = path.read_bytes()
        assert after != data, path
        assert np.array_equal(np.asarray(Image.open(path)), pixels[path]), path
        if path.suffix == ".jpg":
            assert jpeg_scan(after) == jpeg_scan(data)
        if path.suffix == ".png":
            assert png_idat(after) == png_idat(data)
        tags = exiftool_json("-XMP-dc:Description", "-IFD0:ImageDescription", "-IPTC:Caption-Abstract",
                             "-IFD0:Make", str(path))[0]
        caption = captions[str(path)]
        assert (tags["XMP-dc:Description"], tags["IFD0:ImageDescription"], tags["IFD0:Make"]) == (
            caption, caption, "TestCam"), path
        assert tags.get("IPTC:Caption-Abstract") == (caption if path.suffix in (".jpg", ".tif") else None), path


def test_keywords_go_to_dc_subject_and_iptc_keywords_once(photos):
    image = photos / "photo0.jpg"
    with ExifTool() as tool:
        for _ in range(2):
            Writer("embed", tool).write(image, "ein Hund läuft über das Gras", "de", ["tabby cat", "dog"])
    tags = exiftool_json("-XMP-dc:all", "-IPTC:all", str(image))[0]
    assert tags["XMP-dc:Subject"] == ["tabby cat", "dog"] and tags["IPTC:Keywords"] == ["tabby cat", "dog"]
    assert tags["XMP-dc:Description-de"] == tags["IPTC:Caption-Abstract"] == "ein Hund läuft über das Gras"


def test_a_failure_mid_write_leaves_the_original_intact(photos, model_args, capsys, monkeypatch):
    before = {p: p.read_bytes() for p in photos.iterdir()}

    def disk_full(self, *args):
        Path(args[-1]).write_bytes(b"half a file")  # ExifTool got as far as the copy, then the disk filled up
        raise MetadataError("Error writing file: No space left on device")

    monkeypatch.setattr(ExifTool, "run", disk_full)
    assert main(["caption", str(photos), *model_args, "--write", "embed"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {photos / 'photo0.jpg'}: Error writing file: No space left on device" in err
    assert {p: p.read_bytes() for p in photos.iterdir()} == before


def test_a_process_killed_mid_write_leaves_the_original_intact(photos):
    """The process dies after ExifTool wrote the new file and before the rename: the original is as it was."""
    image = photos / "photo0.jpg"
    before = image.read_bytes()
    script = ("import os, signal, sys\nfrom pathlib import Path\n"
              "from captioner.serving.metadata import ExifTool, Writer\n"
              "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
              "Writer('embed', ExifTool()).write(Path(sys.argv[1]), 'a dog', 'en')\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    run = subprocess.run([sys.executable, "-c", script, str(image)], env=env, capture_output=True, timeout=60)
    assert run.returncode == -9, run.stderr
    assert image.read_bytes() == before
    assert "IFD0:ImageDescription" not in exiftool_json(str(image))[0]


def test_txt_files_with_a_prefix_skip_existing_ones(photos, model_args, capsys):
    captions = captions_of(photos, model_args, capsys)
    (photos / "photo1.txt").write_text("my own caption\n")
    assert main(["caption", str(photos), *model_args, "--write", "txt", "--prefix", "sks, "]) == 0
    assert capsys.readouterr().out.strip() == "4 images written (txt), 1 already had a caption (--overwrite " \
                                              "replaces them)"
    assert (photos / "photo1.txt").read_text() == "my own caption\n"
    assert (photos / "photo0.txt").read_text(encoding="utf-8") == f"sks, {captions[str(photos / 'photo0.jpg')]}\n"
    assert main(["caption", str(photos), *model_args, "--write", "txt", "--overwrite"]) == 0
    assert (photos / "photo1.txt").read_text() == captions[str(photos / "photo1.png")] + "\n"


def test_same_named_images_do_not_share_a_sidecar(photos, model_args, capsys):
    shutil.copy(photos / "photo0.jpg", photos / "photo1.jpg")  # photo1.png and photo1.jpg → photo1.xmp
    assert main(["caption", str(photos), *model_args, "--write", "xmp"]) == 1
    err = capsys.readouterr().err
    assert "photo1.png: its sidecar or .txt file would be" in err and "--sidecar photo.jpg.xmp" in err


def test_low_confidence_captions_go_to_review_and_back_with_write_from(photos, model_args, capsys, tmp_path):
    captions = captions_of(photos, model_args, capsys)
    review = tmp_path / "review.csv"
    args = ["caption", str(photos), *model_args, "--write", "xmp,txt", "--min-confidence", "1", "--review", str(review)]
    assert main(args) == 0
    assert f"0 images written (xmp, txt), 5 below --min-confidence listed in {review}" in capsys.readouterr().out
    assert not list(photos.glob("*.xmp")) and not list(photos.glob("*.txt"))
    assert main(args) == 0  # a re-run does not list them twice
    assert "0 images written (xmp, txt), 5 below" in capsys.readouterr().out
    with review.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["caption"] for r in rows] == list(captions.values())

    rows[0]["caption"], rows[1]["caption"] = "a cat sleeps on a sofa", ""  # fixed by a person; rejected
    with review.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, rows[0].keys())
        writer.writeheader()
        writer.writerows(rows)
    assert main(["write", "--from", str(review), "--write", "xmp,txt"]) == 0
    assert capsys.readouterr().out.strip() == "4 images written (xmp, txt)"
    assert exiftool_json(str(photos / "photo0.xmp"))[0]["XMP-dc:Description"] == "a cat sleeps on a sofa"
    assert (photos / "photo0.txt").read_text() == "a cat sleeps on a sofa\n"
    assert not (photos / "photo1.xmp").exists() and (photos / "photo2.xmp").is_file()


@pytest.mark.parametrize(("argv", "message"), [
    (["write", "--from", "absent.csv", "--write", "xmp"], "absent.csv: no such file"),
    (["caption", "x.jpg", "--min-confidence", "0.5"], "--min-confidence decides which captions --write writes"),
])
def test_bad_write_arguments_are_one_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error: ") and message in err and "\n" not in err


def test_a_bmp_cannot_be_embedded_into_and_says_what_to_do(tmp_path, model_args, capsys):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "old.bmp")
    assert main(["caption", str(tmp_path / "old.bmp"), *model_args, "--write", "embed"]) == 1
    assert "old.bmp: captions cannot be embedded in a .bmp file; use --write xmp" in capsys.readouterr().err
