"""Does fine-tuning EfficientNet-Lite2's last blocks pay? A measured run, two arms from the same caption model:

- `tail`: the blocks after the encoder's last stride (9 x 9 grid, blocks 16-20) and its head convolution train with
  the decoder, from cached activations of the layer below them (block 15), batch norm frozen;
- `decoder`: the decoder alone, on the grids those frozen blocks give (the features it was trained on).

Same captions, schedule and epochs; dev CIDEr after each epoch and beam 3 at the end, from the grids alone (a tuned
head would also move the tags), and of the 0.5 / 0.5 weight soup of the start and the result. Run from the repository
root (docs/experiments.md has the result):

    KERAS_HOME=$PWD/.keras python scripts/finetune_encoder_tail.py --arm decoder
    KERAS_HOME=$PWD/.keras python scripts/finetune_encoder_tail.py --arm tail
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from captioner.artifacts.model_files import load_model, vocabulary_beside
from captioner.data.datasets import load_dataset
from captioner.data.images import load_array
from captioner.decoding.options import GREEDY, DecodeOptions
from captioner.decoding.tf_search import TFSearch
from captioner.evaluation.metrics import format_table, score_captions
from captioner.features.efficientnet_lite import preprocess_input
from captioner.features.encoders import ImageEncoder
from captioner.models.base import get_decoder
from captioner.training.callbacks import DevScores
from captioner.training.pipelines import caption_dataset, encode_split
from captioner.training.xent import CaptionTrainer

ENCODER = "efficientnet_lite2"
CUT = "block15_project_bn"  # the last stride-2 block's output: (9, 9, 208) at 260 px
GRID = "head_relu6"  # the (9, 9, 1280) grid the decoder reads


def activations(encoder: ImageEncoder, paths: list[Path], file: Path, batch_size: int = 32) -> np.ndarray:
    """The CUT layer's output for each photo (photos, 81, 208) as float16, computed once and kept in `file`."""
    if file.is_file():
        return np.load(file)
    below = keras.Model(encoder.model.input, encoder.model.get_layer(CUT).output)
    size = encoder.image_size
    rows = []
    for start in tqdm(range(0, len(paths), batch_size), desc="activations", unit="batch"):
        images = np.stack([load_array(p, size) for p in paths[start:start + batch_size]])  # (batch, 260, 260, 3)
        out = below(preprocess_input(images.astype(np.float32)), training=False)  # (batch, 9, 9, 208)
        rows.append(np.asarray(out, np.float16).reshape(len(images), -1, out.shape[-1]))  # (batch, 81, 208)
    table = np.concatenate(rows)
    file.parent.mkdir(parents=True, exist_ok=True)
    np.save(file, table)
    return table


def tail_model(encoder: ImageEncoder, trainable: bool) -> keras.Model:
    """Activations (batch, 81, 208) → grids (batch, 81, 1280) through the encoder's layers after CUT, with their
    ImageNet weights; batch norm keeps its ImageNet statistics (frozen layers run in inference mode)."""
    inner = keras.Model(encoder.model.get_layer(CUT).output, encoder.model.get_layer(GRID).output)
    for layer in inner.layers:
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)
    rows, columns, channels = inner.input.shape[1:]
    acts = keras.Input((rows * columns, channels), name="activations")  # (batch, 81, 208)
    grid = inner(keras.layers.Reshape((rows, columns, channels))(acts))  # (batch, 9, 9, 1280)
    return keras.Model(acts, keras.layers.Reshape((rows * columns, grid.shape[-1]))(grid), name="tail")


def grids(tail: keras.Model, acts: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """The tail's grids (photos, 81, 1280) of cached activations, float32."""
    return np.concatenate([np.asarray(tail(acts[s:s + batch_size].astype(np.float32), training=False))
                           for s in range(0, len(acts), batch_size)])


def dev_scores(search: TFSearch, features: np.ndarray, references: dict[str, list[str]],
               names: list[str]) -> dict[str, dict[str, float]]:
    """Greedy and beam-3 scores (PTB-tokenised, with METEOR) of the dev captions, from the grids alone (no tags)."""
    scores = {}
    for name, options in (("greedy", GREEDY), ("beam 3", DecodeOptions(beam_size=3))):
        captions = DevScores(search, features, references, names, options=options).captions()
        scores[f"dev {name}"] = score_captions(references, dict(zip(names, captions, strict=True)))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", choices=("tail", "decoder"), required=True)
    parser.add_argument("--model", default="mymodel.h5", help="the caption model both arms start from")
    parser.add_argument("--data", default="../shared/data/flickr8k")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="stage 2's (configs/flickr8k_lite2_ft.yaml)")
    parser.add_argument("--limit", type=int, help="photos per split (a quick check of the script)")
    parser.add_argument("--cache", default="cache/tail", help="where the activations are kept")
    parser.add_argument("--output", default="logs/finetune_tail")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    dataset = load_dataset(args.data)
    train_names, dev_names = dataset.split("train")[: args.limit], dataset.split("dev")[: args.limit]
    encoder = ImageEncoder(ENCODER)
    cache = Path(args.cache)
    train_acts = activations(encoder, [dataset.path(n) for n in train_names], cache / f"{ENCODER}-{CUT}-train.npy")
    dev_acts = activations(encoder, [dataset.path(n) for n in dev_names], cache / f"{ENCODER}-{CUT}-dev.npy")

    caption_model, vocab, _ = load_model(args.model, vocabulary_beside(args.model))
    decoder = get_decoder(caption_model)
    tail = tail_model(encoder, trainable=args.arm == "tail")
    if args.arm == "tail":  # activations → tail → decoder, trained end to end
        acts, tokens = keras.Input(train_acts.shape[1:]), keras.Input((None,), dtype="int32")  # (81, 208), (T,)
        model = keras.Model([acts, tokens], decoder([tail(acts), tokens]))
        train_features = train_acts
    else:  # the frozen tail's grids, computed once
        model, train_features = caption_model, grids(tail, train_acts)
    index, sequences = encode_split(dataset, train_names, vocab)
    data = caption_dataset(train_features, index, sequences, batch_size=64, shuffle=True)
    trainer = CaptionTrainer(model, label_smoothing=0.0, attention_reg=1.0)
    trainer.compile(optimizer=keras.optimizers.Adam(args.learning_rate, clipnorm=5.0))
    search = TFSearch(decoder, vocab)
    references = {name: dataset.captions[name] for name in dev_names}

    before = model.get_weights()
    dev_grids = grids(tail, dev_acts)  # recomputed after each epoch: the tail arm moves them
    initial = dev_scores(search, dev_grids, references, dev_names)
    print(format_table(initial))
    history = [{"epoch": 0, "minutes": 0.0, **DevScores(search, dev_grids, references, dev_names).scores()}]
    print(history[-1])
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        loss = trainer.fit(data, epochs=1, verbose=2).history["loss"][-1]
        minutes = (time.perf_counter() - start) / 60
        dev_grids = grids(tail, dev_acts)
        history.append({"epoch": epoch, "minutes": round(minutes, 1), "loss": loss,
                        **DevScores(search, dev_grids, references, dev_names).scores()})
        print(history[-1])
    final = dev_scores(search, dev_grids, references, dev_names)
    print(format_table(final))
    after = model.get_weights()
    model.save_weights(Path(args.output).with_name(f"finetune_{args.arm}.weights.h5"))
    model.set_weights([(old + new) / 2 for old, new in zip(before, after, strict=True)])  # a 0.5 / 0.5 weight soup
    soup = dev_scores(search, grids(tail, dev_acts), references, dev_names)
    print("soup of the start and the result:\n" + format_table(soup))
    out = Path(f"{args.output}_{args.arm}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"arm": args.arm, "model": args.model, "start": initial, "history": history,
                                      "final": final, "soup": soup}, indent=1))


if __name__ == "__main__":
    main()
