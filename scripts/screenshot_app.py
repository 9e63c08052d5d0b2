"""Screenshot the real app captioning real photos, for the README (resource/demo.png).

    python scripts/screenshot_app.py                       # the shipped mymodel.h5 + tokenizer.pkl
    python scripts/screenshot_app.py --model runs/base/mymodel.h5 --tokenizer runs/base/tokenizer.pkl
    python scripts/screenshot_app.py --languages en zh de --examples Cat Astronaut \
        --output resource/demo_languages.png              # captions side by side (models/zh, models/de)

Starts `streamlit run app.py` on a free loopback port, uploads scikit-image's public-domain sample
photos through headless Chromium, waits for every caption and saves the page. Rerun it whenever
the shipped model changes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from appdriver import ROOT, launch_chromium, serve_app, upload
from playwright.sync_api import sync_playwright

from captioner.serving import gallery
from captioner.serving.shipped import SHIPPED_LANGUAGES

WAIT_MS = 180_000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mymodel.h5")
    parser.add_argument("--tokenizer", default="tokenizer.pkl")
    parser.add_argument("--encoder-weights", default=os.environ.get("CAPTIONER_ENCODER_WEIGHTS", "imagenet"))
    parser.add_argument("--output", default=str(ROOT / "resource" / "demo.png"))
    parser.add_argument("--examples", nargs="+", default=["Cat", "Astronaut", "Rocket"], choices=list(gallery.EXAMPLES))
    parser.add_argument("--languages", nargs="+", default=["en"], choices=list(SHIPPED_LANGUAGES),
                        help="caption languages to pick, the first one being English (default: en)")
    args = parser.parse_args(argv)

    env = {"CAPTIONER_MODEL": str(Path(args.model).resolve()),
           "CAPTIONER_TOKENIZER": str(Path(args.tokenizer).resolve()),
           "CAPTIONER_ENCODER_WEIGHTS": args.encoder_weights}
    with tempfile.TemporaryDirectory() as folder, serve_app(env) as server, sync_playwright() as p:
        photos = []
        for label in args.examples:
            photos.append(Path(folder) / f"{label.lower()}.jpg")
            gallery.load_example(label).save(photos[-1], quality=92)
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1020})
        page.goto(server.url)
        page.get_by_text("Drop one or more photos").wait_for(timeout=WAIT_MS)
        for lang in args.languages[1:]:  # English is picked when the page opens
            page.get_by_role("button", name=gallery.language_label(lang)).click()
            page.wait_for_timeout(1000)
        upload(page, photos)
        for index in range(len(photos)):
            for lang in args.languages:
                page.locator(f".st-key-caption_{index}_{lang}").wait_for(timeout=WAIT_MS)
        page.wait_for_timeout(2000)  # let images and the progress bars finish drawing
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.output)
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
