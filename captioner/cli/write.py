"""`captioner caption --write xmp|embed|txt` and `captioner write --from reviewed.csv`: the CLI side of
captioner.serving.writing (captions into sidecars, image metadata and .txt files)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from captioner.errors import CaptionerError
from captioner.serving.metadata import SIDECAR_STYLES, TARGETS

if TYPE_CHECKING:
    from captioner.decoding.captioning import ImageCaptioner
    from captioner.decoding.options import DecodeOptions
    from captioner.serving.writing import WriteReport


def _targets(value: str) -> list[str]:
    targets = [t.strip() for t in value.split(",") if t.strip()]
    for target in targets:
        if target not in TARGETS:
            raise argparse.ArgumentTypeError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    return targets


def _add_target_args(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--write", action="extend", type=_targets, required=required, metavar="xmp,embed,txt",
                        help="write each caption into an XMP sidecar (xmp), the image's own EXIF/XMP/IPTC metadata "
                             "(embed; pixels untouched) and/or a .txt file beside it (txt); comma-separated or "
                             "repeated. Images that already have a caption there are skipped (resumable)")
    parser.add_argument("--sidecar", choices=SIDECAR_STYLES, default=SIDECAR_STYLES[0],
                        help="sidecar name for photo.jpg: photo.xmp (Lightroom, ExifTool; default) or photo.jpg.xmp "
                             "(darktable, digiKam)")
    parser.add_argument("--prefix", default="", help='text put before each caption in .txt files, e.g. "sks, "')
    parser.add_argument("--overwrite", action="store_true",
                        help="replace captions already there (default: keep them and skip the image)")


def add_write_args(caption: argparse.ArgumentParser) -> None:
    """The --write options of `captioner caption`."""
    _add_target_args(caption, required=False)
    caption.add_argument("--min-confidence", type=float, metavar="C",
                         help="with --write: write only captions with confidence >= C (0..1); list the others in "
                              "--review for a person to fix and write with `captioner write --from`")
    caption.add_argument("--review", default="review.csv", metavar="FILE.csv",
                         help="where --min-confidence lists the captions to review (default: %(default)s)")


def add_write_command(commands) -> None:
    """`captioner write --from reviewed.csv --write xmp`."""
    write = commands.add_parser("write", help="write reviewed captions from a CSV into sidecars, metadata or .txt",
                                description="Write the captions of a CSV/JSONL file (the --review file of "
                                            "`captioner caption --min-confidence`, edited by a person, or a --output "
                                            "file) into the images' sidecars, metadata or .txt files. Rows whose "
                                            "caption was emptied are skipped.")
    write.add_argument("--from", dest="source", required=True, metavar="FILE.csv", help="captions file to write")
    write.add_argument("--lang", default="en", help="language of the captions, for XMP (default: %(default)s)")
    _add_target_args(write, required=True)


def check_write_args(args: argparse.Namespace) -> None:
    """Combinations --write cannot take, named before any model loads."""
    if not args.write:
        if args.min_confidence is not None:
            raise CaptionerError("--min-confidence decides which captions --write writes; add --write xmp, embed "
                                 "or txt.")
        return
    if args.output or args.attention or args.engine == "ray":
        raise CaptionerError("--write writes beside each image; run it without --output, --attention and "
                             "--engine ray.")
    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
        raise CaptionerError(f"--min-confidence is a confidence between 0 and 1, got {args.min_confidence}.")


def print_report(report: WriteReport, targets: Sequence[str]) -> None:
    """One summary line, like batch mode, after the skipped files."""
    for failure in report.failures:
        print(f"skipped {failure.reason}", file=sys.stderr)
    line = f"{report.written} images written ({', '.join(dict.fromkeys(targets))})"
    if report.already_done:
        line += f", {report.already_done} already had a caption (--overwrite replaces them)"
    if report.for_review:
        line += f", {report.for_review} below --min-confidence listed in {report.review_file} for review"
    print(line)


def caption_and_write(args: argparse.Namespace, model: ImageCaptioner, paths: list[Path],
                      options: DecodeOptions) -> list:
    """Run `captioner caption --write`; returns the failures."""
    from captioner.serving.writing import write_captions

    report = write_captions(model, paths, args.write, options, args.batch_size, overwrite=args.overwrite,
                            sidecar_style=args.sidecar, prefix=args.prefix, min_confidence=args.min_confidence,
                            review_file=args.review)
    print_report(report, args.write)
    return report.failures


def cmd_write(args: argparse.Namespace) -> None:
    from captioner.serving.writing import write_reviewed

    report = write_reviewed(args.source, args.write, args.lang, overwrite=args.overwrite, sidecar_style=args.sidecar,
                            prefix=args.prefix)
    print_report(report, args.write)
    if report.failures:
        raise CaptionerError(f"{len(report.failures)} captions could not be written (see above).")
