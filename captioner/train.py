"""Training: cached features + captions → a tf.data pipeline → Keras fit with dev-score early stopping."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops
from matplotlib.figure import Figure

from captioner.artifacts import ModelInfo, get_decoder, load_model, save_model
from captioner.config import TrainConfig
from captioner.data import CaptionDataset, load_dataset
from captioner.decode import CaptionGenerator
from captioner.encoders import ImageEncoder, get_backbone
from captioner.errors import CaptionerError, DataError
from captioner.evaluate import score_captions
from captioner.features import FeatureCache
from captioner.model import build_caption_model
from captioner.scst import CiderD, SelfCriticalTrainer
from captioner.vocab import Vocabulary

MONITORS = {"cider": "val_cider", "bleu4": "val_bleu4", "loss": "val_loss"}


@dataclass
class TrainResult:
    model_path: Path
    vocab_path: Path
    history: dict[str, list[float]]
    best: dict[str, float] = field(default_factory=dict)


class CaptionTrainer(keras.Model):
    """Wraps the caption model for fit(): masked, label-smoothed cross-entropy plus the doubly
    stochastic attention penalty λ·mean_i(1 - Σ_t α_ti)² that makes every cell get attention."""

    def __init__(self, caption_model: keras.Model, label_smoothing: float = 0.0,
                 attention_reg: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.caption_model = caption_model
        self.label_smoothing = label_smoothing
        self.attention_reg = attention_reg
        self.built = caption_model.built  # all variables live in the (already built) caption model

    def call(self, inputs, training=False):
        return self.caption_model(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, alpha = y_pred  # (batch, T, V), (batch, T, 49)
        mask = ops.cast(ops.not_equal(y, 0), "float32")  # (batch, T)
        log_probs = ops.log_softmax(logits, axis=-1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, ops.expand_dims(y, -1), axis=-1), -1)
        smooth = -ops.mean(log_probs, axis=-1)  # cross-entropy with the uniform distribution
        per_token = (1.0 - self.label_smoothing) * nll + self.label_smoothing * smooth  # (batch, T)
        loss = ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)
        coverage = ops.sum(alpha * ops.expand_dims(mask, -1), axis=1)  # (batch, 49)
        return loss + self.attention_reg * ops.mean(ops.square(1.0 - coverage))


def caption_dataset(features: np.ndarray, image_index: np.ndarray, sequences: list[list[int]],
                    batch_size: int, shuffle: bool, seed: int = 0) -> tf.data.Dataset:
    """((features, input tokens), target tokens) batches, bucketed by caption length.

    Features stay in memory once (float16) and are gathered per batch, so five captions of one
    image never copy its grid five times.
    """
    table = tf.constant(features)  # (images, 49, 1280) float16
    lengths = np.array([len(s) for s in sequences])
    padded = np.zeros((len(sequences), lengths.max()), np.int32)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = sequence
    ds = tf.data.Dataset.from_tensor_slices((image_index.astype(np.int32), padded, lengths))
    if shuffle:
        ds = ds.shuffle(len(sequences), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda index, tokens, length: (index, tokens[:length]))  # unpadded, for bucketing
    boundaries = sorted({int(b) + 1 for b in np.quantile(lengths, [0.2, 0.4, 0.6, 0.8, 0.95])})
    ds = ds.bucket_by_sequence_length(
        lambda index, tokens: tf.shape(tokens)[0], boundaries, [batch_size] * (len(boundaries) + 1))
    bucket_sizes = np.bincount(np.searchsorted(boundaries, lengths, side="right"))
    ds = ds.apply(tf.data.experimental.assert_cardinality(int(np.ceil(bucket_sizes / batch_size).sum())))

    def to_example(index, tokens):
        grid = tf.cast(tf.gather(table, index), tf.float32)  # (batch, 49, 1280)
        return (grid, tokens[:, :-1]), tokens[:, 1:]  # teacher forcing: predict the next token

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class DevScores(keras.callbacks.Callback):
    """Greedy-decodes the dev images after each epoch and logs val_bleu4 and val_cider."""

    def __init__(self, generator: CaptionGenerator, features: np.ndarray,
                 references: dict[str, list[str]], names: list[str], batch_size: int = 250):
        super().__init__()
        self.generator = generator
        self.features = features
        self.references = references
        self.names = names
        self.batch_size = batch_size

    def scores(self) -> dict[str, float]:
        captions = []
        for start in range(0, len(self.features), self.batch_size):
            batch = self.features[start:start + self.batch_size].astype(np.float32)
            captions.extend(c.text for c in self.generator.greedy(batch))
        vocab = self.generator.vocab
        return score_captions(self.references, dict(zip(self.names, captions, strict=True)), lang=vocab.lang,
                              tokenization=vocab.tokenization, meteor=False, ptb=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        scores = self.scores()
        if logs is not None:
            logs["val_bleu4"] = scores["BLEU-4"]
            logs["val_cider"] = scores["CIDEr"]
        print(f" — dev BLEU-4 {scores['BLEU-4']:.4f}, CIDEr {scores['CIDEr']:.4f}")


def image_dataset(features: np.ndarray, batch_size: int, seed: int = 0) -> tf.data.Dataset:
    """Shuffled (features, image index) batches, one row per image (for self-critical training)."""
    table = tf.constant(features)  # (images, 49, 1280) float16
    ds = tf.data.Dataset.range(len(features)).shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda index: (tf.cast(tf.gather(table, index), tf.float32), index))
    return ds.prefetch(tf.data.AUTOTUNE)


def _encode_split(dataset: CaptionDataset, names: list[str], vocab: Vocabulary
                  ) -> tuple[np.ndarray, list[list[int]]]:
    index, sequences = [], []
    for row, name in enumerate(names):
        for caption in dataset.captions[name]:
            index.append(row)
            sequences.append(vocab.encode(caption))
    return np.array(index), sequences


def prepare_features(dataset: CaptionDataset, config: TrainConfig, log: Callable[[str], None] = print
                     ) -> tuple[CaptionDataset, FeatureCache]:
    """Extract (or reuse) features for the train and dev images; drop unreadable images."""
    encoder = ImageEncoder(config.encoder, config.encoder_weights)
    cache = FeatureCache(config.cache_dir, config.encoder, encoder.backbone.image_size)
    names = dataset.split("train") + dataset.split("dev")
    failures = cache.extract([dataset.path(n) for n in names], encoder)
    if failures:
        bad = {f.path.name for f in failures}
        for failure in failures[:10]:
            log(f"skipped {failure.reason}")
        log(f"skipped {len(failures)} unreadable images")
        dataset.splits = {k: [n for n in v if dataset.path(n).name not in bad] for k, v in dataset.splits.items()}
    return dataset, cache


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=steps_per_epoch * config.epochs, warmup_target=config.learning_rate,
            warmup_steps=steps_per_epoch // 2)
    return keras.optimizers.Adam(rate, clipnorm=config.clipnorm)


def _trainer_and_data(config: TrainConfig, caption_model: keras.Model, vocab: Vocabulary,
                      dataset: CaptionDataset, train_features: np.ndarray, dev_features: np.ndarray):
    """The fit() wrapper for the configured objective, its train/dev datasets and steps per epoch."""
    train_names, dev_names = dataset.split("train"), dataset.split("dev")
    if config.objective == "xent":
        trainer = CaptionTrainer(caption_model, config.label_smoothing, config.attention_reg)
        train_ds = caption_dataset(train_features, *_encode_split(dataset, train_names, vocab),
                                   config.batch_size, shuffle=True, seed=config.seed)
        dev_ds = caption_dataset(dev_features, *_encode_split(dataset, dev_names, vocab),
                                 config.batch_size, shuffle=False)
        captions = sum(len(dataset.captions[n]) for n in train_names)
        return trainer, train_ds, dev_ds, captions // config.batch_size + 1
    if config.objective != "scst":
        raise CaptionerError(f"objective must be 'xent' or 'scst', not {config.objective!r}.")
    if not config.init_from:
        raise CaptionerError("self-critical training fine-tunes a trained model: set init_from.")
    reward = CiderD([[vocab.tokenize(c) for c in dataset.captions[n]] for n in train_names])
    trainer = SelfCriticalTrainer(caption_model, vocab, reward, config.scst_samples, vocab.max_length + 2)
    train_ds = image_dataset(train_features, config.batch_size, config.seed)
    return trainer, train_ds, None, len(train_names) // config.batch_size + 1


def train(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train a captioning model as `config` says and save mymodel.h5 + tokenizer.pkl in its output."""
    if config.monitor not in MONITORS:
        raise CaptionerError(f"monitor must be one of {list(MONITORS)}, not {config.monitor!r}.")
    keras.utils.set_random_seed(config.seed)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.data, config.images, config.lang, config.seed).limit(config.limit)
    for problem in dataset.problems[:10]:
        log(f"skipped {problem}")
    log(dataset.summary())
    dataset, cache = prepare_features(dataset, config, log)
    train_names, dev_names = dataset.split("train"), dataset.split("dev")
    if not train_names or not dev_names:
        raise DataError(f"{config.data}: need train and dev images, got {len(train_names)} and {len(dev_names)}.")

    lang = config.lang or "en"
    train_features = cache.load([dataset.path(n) for n in train_names])  # (images, 49, 1280)
    dev_features = cache.load([dataset.path(n) for n in dev_names])
    if config.init_from:  # fine-tune a saved model with its own vocabulary
        caption_model, vocab, _ = load_model(config.init_from, Path(config.init_from).with_name("tokenizer.pkl"))
    else:
        vocab = Vocabulary.build((c for n in train_names for c in dataset.captions[n]), config.min_count,
                                 config.max_length, config.tokenization, lang)
        caption_model = build_caption_model(
            len(vocab), train_features.shape[1:], embedding_dim=config.embedding_dim, units=config.units,
            attention_units=config.attention_units, dropout=config.dropout)
    log(f"vocabulary: {len(vocab)} tokens (min count {config.min_count})")
    trainer, train_ds, dev_ds, steps_per_epoch = _trainer_and_data(
        config, caption_model, vocab, dataset, train_features, dev_features)
    trainer.compile(optimizer=_optimizer(config, steps_per_epoch))
    generator = CaptionGenerator(get_decoder(caption_model), vocab)
    dev_refs = {n: dataset.captions[n] for n in dev_names}
    monitor = MONITORS[config.monitor]
    mode = "min" if config.monitor == "loss" else "max"
    callbacks = [
        DevScores(generator, dev_features, dev_refs, dev_names),
        keras.callbacks.CSVLogger(str(output / "history.csv"), append=True),
        keras.callbacks.ModelCheckpoint(str(output / "best.weights.h5"), monitor=monitor, mode=mode,
                                        save_best_only=True, save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=config.patience,
                                      restore_best_weights=True),
        keras.callbacks.BackupAndRestore(str(output / "backup")),
    ]
    if config.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5,
                                                           patience=1, min_lr=1e-5))
    if not (output / "backup").exists():  # a fresh run, not a resumed one: forget earlier runs here
        for stale in ("history.csv", "best.weights.h5"):
            (output / stale).unlink(missing_ok=True)
    (output / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    try:
        trainer.fit(train_ds, validation_data=dev_ds, epochs=config.epochs, callbacks=callbacks,
                    shuffle=False)  # the tf.data pipeline shuffles
    except KeyboardInterrupt:
        if not (output / "best.weights.h5").is_file():
            raise CaptionerError(f"training interrupted before the first epoch ended; nothing to save in "
                                 f"{output}.") from None
        log(f"interrupted: saving the best epoch so far; the same command resumes from {output / 'backup'}")
    trainer.load_weights(output / "best.weights.h5")
    scores = DevScores(generator, dev_features, dev_refs, dev_names).scores()
    info = ModelInfo(config.encoder, get_backbone(config.encoder).image_size, len(vocab), vocab.fingerprint,
                     vocab.lang, extra={"dev_greedy": scores, "config": dataclasses.asdict(config)})
    model_path, vocab_path = output / "mymodel.h5", output / "tokenizer.pkl"
    save_model(caption_model, vocab, info, model_path, vocab_path)
    history = pd.read_csv(output / "history.csv").to_dict("list")  # every epoch, across resumed runs
    plot_history(history, output / "history.png")
    log(f"saved {model_path} and {vocab_path}; dev greedy BLEU-4 {scores['BLEU-4']:.4f}, CIDEr {scores['CIDEr']:.4f}")
    return TrainResult(model_path, vocab_path, history, scores)


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    """Loss and dev scores per epoch, as a PNG (no pyplot: no global matplotlib state)."""
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    for key in ("loss", "val_loss", "reward"):
        if key in history:
            left.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
    left.set(xlabel="epoch", title="Training objective and dev loss")
    left.legend()
    for key, label in (("val_bleu4", "dev BLEU-4"), ("val_cider", "dev CIDEr")):
        if key in history:
            right.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=label)
    right.set(xlabel="epoch", title="Dev scores (greedy)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
