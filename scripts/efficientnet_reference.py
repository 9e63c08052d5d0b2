"""Reference grids and logits of EfficientNet-Lite from the PyTorch reference implementation, for the port test.

Run once, with PyTorch and the reference package installed (never needed to caption):
    pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 --no-deps
    python scripts/efficientnet_reference.py          # writes tests/data/efficientnet_lite_reference.npz
The photos are scikit-image's public-domain samples, resized by captioner's own image loader; the
resized pixels are stored too, so the test feeds the Keras port exactly what the reference saw.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.data
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

from captioner.data.images import load_array
from captioner.features.efficientnet_lite import LITE_VARIANTS, package_checkpoint

PHOTOS = ("chelsea", "coffee", "astronaut")
OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "efficientnet_lite_reference.npz"


def reference(variant: str) -> dict[str, np.ndarray]:
    """Pixels, (photos, rows, columns, 1280) grids and (photos, 1000) logits of one Lite size."""
    size = LITE_VARIANTS[variant].image_size
    network = EfficientNet.from_pretrained(variant.replace("_", "-"), weights_path=str(package_checkpoint(variant)))
    network.eval()
    pixels = np.stack([load_array(Image.fromarray(getattr(skimage.data, name)()), (size, size))
                       for name in PHOTOS])  # (3, size, size, 3)
    x = torch.from_numpy(((pixels.astype(np.float32) - 127.0) / 128.0).transpose(0, 3, 1, 2))  # (3, 3, s, s)
    with torch.no_grad():
        grid = network.extract_features(x).numpy().transpose(0, 2, 3, 1)  # (3, rows, columns, 1280)
        logits = network(x).numpy()  # (3, 1000)
    return {f"{variant}_pixels": pixels, f"{variant}_grid": grid, f"{variant}_logits": logits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    arrays = {**reference("efficientnet_lite2"), **reference("efficientnet_lite0")}
    np.savez_compressed(args.output, photos=np.array(PHOTOS), **arrays)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
