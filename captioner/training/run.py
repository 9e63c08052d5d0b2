"""Training runs: a recipe → cached features streamed through tf.data → Keras fit with dev-score
early stopping, checkpoints and resumption → mymodel.h5 + tokenizer.pkl."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import keras
import pandas as pd
import tensorflow as tf

from captioner.artifacts.model_files import ModelInfo, load_model, save_model, vocabulary_beside
from captioner.atomic import atomic_path, write_bytes
from captioner.data.datasets import CaptionDataset, load_dataset
from captioner.decoding.options import DecodeOptions
from captioner.decoding.tf_search import TFSearch
from captioner.errors import CaptionerError, DataError
from captioner.features.cache import FeatureCache, FeatureTable
from captioner.features.class_row import ClassRowTable, class_word_ids, grounding_vocabulary
from captioner.features.encoders import ImageEncoder, get_backbone
from captioner.models import CLASS_READERS
from captioner.models.base import build_caption_model, get_decoder
from captioner.text.objects import without_concepts
from captioner.text.vocabulary import Vocabulary
from captioner.training.callbacks import DevScores, plot_history
from captioner.training.config import MONITORS, TrainConfig
from captioner.training.pipelines import Features, caption_dataset, encode_split, image_dataset, split_captions, views
from captioner.training.rewards import CiderD
from captioner.training.scst import SelfCriticalTrainer
from captioner.training.strategy import SINGLE_PROCESS, ChiefDevScores, Role, fit_multi_worker
from captioner.training.xent import CaptionTrainer


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv as columns: metric → one value per epoch."""
    return {str(name): values for name, values in pd.read_csv(path).to_dict("list").items()}


@dataclass
class TrainResult:
    model_path: Path
    vocab_path: Path
    history: dict[str, list[float]]
    best: dict[str, float] = field(default_factory=dict)


def prepare_features(dataset: CaptionDataset, config: TrainConfig, log: Callable[[str], None] = print,
                     extract: bool = True) -> tuple[CaptionDataset, FeatureCache]:
    """Extract (or reuse) features for the train and dev images; drop unreadable images.

    extract=False (the other workers of a multi-worker run, once the chief has extracted): only read the
    cache, and drop the images it lacks, which are the ones the chief could not read."""
    cache = FeatureCache(config.cache_dir, config.encoder, get_backbone(config.encoder).image_size)
    paths = [dataset.path(n) for n in dataset.split("train") + dataset.split("dev")]
    if extract:
        failures = cache.extract(paths, ImageEncoder(config.encoder, config.encoder_weights))
        bad = {f.path.name for f in failures}
    else:
        bad = {p.name for p in cache.missing(paths)}
    if bad:
        if extract:
            for failure in failures[:10]:
                log(f"skipped {failure.reason}")
        log(f"skipped {len(bad)} unreadable images")
        dataset.splits = {k: [n for n in v if dataset.path(n).name not in bad] for k, v in dataset.splits.items()}
    if config.hflip and extract:
        log("features of the mirrored training photos (flip augmentation):")
        mirrored_cache(config).extract([dataset.path(n) for n in dataset.split("train")],
                                       ImageEncoder(config.encoder, config.encoder_weights))
    return dataset, cache


def mirrored_cache(config: TrainConfig) -> FeatureCache:
    """The cache of the features of the photos mirrored left to right."""
    return FeatureCache(config.cache_dir, config.encoder, get_backbone(config.encoder).image_size, mirrored=True)


def train_table(cache: FeatureCache, config: TrainConfig, paths: list[Path]) -> Features:
    """The training images' features, followed with hflip by those of the same photos mirrored; for a decoder
    that reads the classifier, each with its photo's class probabilities as an extra row."""
    locations = cache.locations(paths)
    if config.hflip:
        locations += mirrored_cache(config).locations(paths)
    table = FeatureTable(locations)
    if config.decoder not in CLASS_READERS:
        return table
    classes = cache.class_cache().locations(paths)  # a mirrored photo's classes: the original's
    return ClassRowTable(table, FeatureTable(classes * len(views(config.hflip))))


def dev_table(cache: FeatureCache, config: TrainConfig, paths: list[Path]) -> Features:
    """The dev images' features, with their class probabilities for a decoder that reads them."""
    table = cache.table(paths)
    return ClassRowTable(table, cache.class_cache().table(paths)) if config.decoder in CLASS_READERS else table


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=steps_per_epoch * config.epochs, warmup_target=config.learning_rate,
            warmup_steps=steps_per_epoch // 2)
    return keras.optimizers.Adam(rate, clipnorm=config.clipnorm)


def _trainer_and_data(config: TrainConfig, caption_model: keras.Model, vocab: Vocabulary,
                      dataset: CaptionDataset, train_features: Features, dev_features: Features):
    """The fit() wrapper for the configured objective, its train/dev datasets and steps per epoch."""
    train_names, dev_names = dataset.split("train"), dataset.split("dev")
    if config.objective == "xent":
        trainer = CaptionTrainer(caption_model, config.label_smoothing, config.attention_reg)
        train_ds = caption_dataset(train_features, *encode_split(dataset, train_names, vocab, config.hflip),
                                   config.batch_size, shuffle=True, seed=config.seed)
        dev_ds = caption_dataset(dev_features, *encode_split(dataset, dev_names, vocab),
                                 config.batch_size, shuffle=False)
        return trainer, train_ds, dev_ds, int(train_ds.cardinality())  # batches per pass, as length-bucketed
    references = [captions for mirrored in views(config.hflip)  # one list per table row
                  for captions in split_captions(dataset, train_names, vocab.lang, vocab.tokenization, mirrored)]
    reward = CiderD([[vocab.tokenize(c) for c in captions] for captions in references])
    trainer = SelfCriticalTrainer(caption_model, vocab, reward, config.scst_samples, config.scst_max_length,
                                  config.scst_dropout, config.scst_temperature)
    train_ds = image_dataset(train_features, config.batch_size, config.seed)
    return trainer, train_ds, None, int(train_ds.cardinality())


class _Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose files are renamed into place, so a run killed mid-save keeps the previous
    epoch's backup, and whose damaged backup is a clear error, not a traceback.

    Every worker restores from `backup_dir`; each writes into `write_dir` (the chief: the same folder)."""

    def __init__(self, backup_dir: str, write_dir: Path | None = None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.write_dir = Path(write_dir or backup_dir)

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as error:
            raise CaptionerError(f"{self.backup_dir}: cannot resume from this training backup ({error}); it is "
                                 f"damaged or from another recipe: delete that folder to start over.") from None

    def _save_model(self):
        with atomic_path(self.write_dir / Path(self._weights_path).name, ".weights.h5") as weights:
            self.model.save_weights(weights, overwrite=True)
        write_bytes(self.write_dir / Path(self._training_metadata_path).name,
                    json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}).encode())


class _BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best epoch so far in `path`, renamed into place (a kill mid-write leaves the
    previous best); `best` is the score to beat, from the epochs a resumed run already has."""

    def __init__(self, path: Path, monitor: str, mode: str, best: float | None = None):
        super().__init__()
        self.path, self.monitor, self.mode, self.best = path, monitor, mode, best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None or math.isnan(current) or (self.best is not None and not (
                current < self.best if self.mode == "min" else current > self.best)):
            return
        self.best = float(current)
        with atomic_path(self.path, ".weights.h5") as partial:
            self.model.save_weights(partial, overwrite=True)


def _resume_history(output: Path, monitor: str, mode: str) -> float | None:
    """Before a run: keep history.csv to the epochs the backup holds (a run killed after writing an epoch's
    row but before backing it up redoes that epoch) and return the best `monitor` score among them; with
    no backup, a fresh run: forget earlier runs here."""
    metadata = output / "backup" / "training_metadata.json"
    try:
        epochs = int(json.loads(metadata.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        epochs = 0
    history = output / "history.csv"
    if not epochs:
        for stale in (history, output / "best.weights.h5"):
            stale.unlink(missing_ok=True)
        return None
    lines = history.read_bytes().splitlines(keepends=True) if history.is_file() else []
    lines = [line for line in lines[:epochs + 1] if line.endswith(b"\n")]  # header + rows; not a cut last line
    write_bytes(history, b"".join(lines))
    try:
        scores = pd.read_csv(history)[monitor].dropna() if len(lines) > 1 else pd.Series(dtype=float)
    except (ValueError, KeyError):  # an unreadable history, or another monitor: any epoch may then be the best
        return None
    return None if scores.empty else float(scores.min() if mode == "min" else scores.max())


def check_role(config: TrainConfig, role: Role) -> None:
    """A CaptionerError if the recipe cannot train in this role (distributed runs support less)."""
    if role.multi_worker and config.eval_every:
        raise CaptionerError("eval_every is for one machine: a multi-worker run scores dev once per pass over "
                             "the data; remove eval_every from the recipe.")
    if role.replicas > 1 and config.objective != "xent":
        raise CaptionerError(f"objective {config.objective!r} trains on one replica only: its step applies its own "
                             f"unscaled gradients around a sampled, XLA-compiled search and a Python CIDEr-D reward; "
                             f"fine-tune with --strategy none after the distributed cross-entropy stage.")


def load_features(config: TrainConfig, role: Role, log: Callable[[str], None]) -> tuple[CaptionDataset, FeatureCache]:
    """The dataset and its feature cache: the chief extracts, the other workers wait for it, then only read."""
    dataset = load_dataset(config.data, config.images, config.lang, config.seed).limit(config.limit)
    if config.held_out_concepts:  # the DCC protocol: the model never reads these words in training
        dataset = without_concepts(dataset, config.held_out_concepts)
        log(f"held out {config.held_out_concepts}: training photos a caption of which names them are removed")
    for problem in dataset.problems[:10]:
        log(f"skipped {problem}")
    log(dataset.summary())
    if role.chief:
        dataset, cache = prepare_features(dataset, config, log)
    role.share([0.0])  # the other workers wait here until the chief's cache is complete
    if not role.chief:
        dataset, cache = prepare_features(dataset, config, log, extract=False)
    train_names, dev_names = dataset.split("train"), dataset.split("dev")
    if not train_names or not dev_names:
        raise DataError(f"{config.data}: need train and dev images, got {len(train_names)} and {len(dev_names)}.")
    return dataset, cache


def caption_model_and_vocabulary(config: TrainConfig, dataset: CaptionDataset, feature_shape: tuple[int, ...],
                                 ) -> tuple[keras.Model, Vocabulary]:
    """The model to train, new or (init_from) a saved one to fine-tune with its own vocabulary."""
    if config.init_from:
        caption_model, vocab, _ = load_model(config.init_from, vocabulary_beside(config.init_from))
        return caption_model, vocab
    lang, train_names = config.lang or "en", dataset.split("train")
    tokenization = cast(str, config.tokenization)  # TrainConfig sets it from the language when a recipe does not
    texts = [c for n in train_names for c in dataset.captions[n]]
    if config.hflip:  # the mirrored captions that changed: they may say "right" where no original does
        mirrored = split_captions(dataset, train_names, lang, tokenization, mirrored=True)
        texts += [m for ms, cs in zip(mirrored, (dataset.captions[n] for n in train_names), strict=True)
                  for m, c in zip(ms, cs, strict=True) if m != c]
    vocab = Vocabulary.build(texts, config.min_count, config.max_length, tokenization, lang)
    extra = {}
    if config.decoder in CLASS_READERS:  # every tag's caption word can be copied, even those no caption writes
        vocab = grounding_vocabulary(vocab)
        extra["class_words"] = class_word_ids(vocab)
    caption_model = build_caption_model(
        len(vocab), feature_shape, config.decoder, embedding_dim=config.embedding_dim,
        units=config.units, attention_units=config.attention_units, dropout=config.dropout, **extra)
    if extra:  # its class vectors: the rows of the encoder's classifier
        get_decoder(caption_model).set_class_vectors(
            ImageEncoder(config.encoder, config.encoder_weights).classifier_kernel())
    return caption_model, vocab


def train(config: TrainConfig, log: Callable[[str], None] = print, role: Role = SINGLE_PROCESS) -> TrainResult:
    """Train a captioning model as `config` says and save mymodel.h5 + tokenizer.pkl in its output.

    Under a tf.distribute strategy (`role = Role.of(strategy)`), the model and optimizer live in its scope and
    each global batch of `batch_size` is split across the replicas; with several workers, the chief alone
    extracts features, scores the dev split and writes the run's files (output on storage every worker sees),
    while the others write their identical checkpoints to a temporary folder and return without saving a model.
    """
    keras.utils.set_random_seed(config.seed)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    check_role(config, role)
    dataset, cache = load_features(config, role, log)
    train_names, dev_names = dataset.split("train"), dataset.split("dev")
    train_features = train_table(cache, config, [dataset.path(n) for n in train_names])  # (rows, cells, channels)
    dev_features = dev_table(cache, config, [dataset.path(n) for n in dev_names])
    with role.scope():  # variables and optimizer state per replica
        caption_model, vocab = caption_model_and_vocabulary(config, dataset, train_features.shape[1:])
        log(f"vocabulary: {len(vocab)} tokens (min count {config.min_count})")
        trainer, train_ds, dev_ds, steps_per_epoch = _trainer_and_data(
            config, caption_model, vocab, dataset, train_features, dev_features)
        if config.eval_every:  # dev scored every `eval_every` steps: an "epoch" is that many steps of an endless stream
            train_ds, steps_per_epoch = train_ds.repeat(), config.eval_every
        trainer.compile(optimizer=_optimizer(config, steps_per_epoch))
        if role.multi_worker:  # fit() would build the optimizer's slots in the scope; the multi-worker loop does not
            trainer.optimizer.build(trainer.trainable_variables)
    search = TFSearch(get_decoder(caption_model), vocab)
    dev_refs = {n: dataset.captions[n] for n in dev_names}
    dev = (search, dev_features, dev_refs, dev_names)
    monitor, mode = MONITORS[config.monitor], "min" if config.monitor == "loss" else "max"
    best = _resume_history(output, monitor, mode) if role.chief else None
    shared = role.share([math.nan if best is None else best])[0]  # every worker saves at the chief's epochs
    best = None if math.isnan(shared) else float(shared)
    with role.workspace(output) as files:
        callbacks = _callbacks(config, role, files, output, dev, monitor, mode, best)
        (files / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
        interrupted = _fit(config, role, trainer, train_ds, dev_ds, callbacks, files, log)
    model_path, vocab_path = output / "mymodel.h5", output / "tokenizer.pkl"
    if not role.chief:  # the chief saves the model; this worker's copies were only for keeping in step
        return TrainResult(model_path, vocab_path, {})
    trainer.load_weights(output / "best.weights.h5")
    scores = DevScores(*dev).scores()
    info = ModelInfo(config.encoder, get_backbone(config.encoder).image_size, len(vocab), vocab.fingerprint,
                     vocab.lang, extra={"dev_greedy": scores, "config": dataclasses.asdict(config)})
    save_model(caption_model, vocab, info, model_path, vocab_path)
    if not interrupted:  # a run killed before this point resumes from the backup instead of starting over
        shutil.rmtree(output / "backup", ignore_errors=True)
    history = read_history(output / "history.csv")  # every epoch, across resumed runs
    plot_history(history, output / "history.png")
    log(f"saved {model_path} and {vocab_path}; dev greedy BLEU-4 {scores['BLEU-4']:.4f}, CIDEr {scores['CIDEr']:.4f}")
    return TrainResult(model_path, vocab_path, history, scores)


def _callbacks(config: TrainConfig, role: Role, files: Path, output: Path,
               dev: tuple[TFSearch, Features, dict[str, list[str]], list[str]], monitor: str, mode: str,
               best: float | None) -> list[keras.callbacks.Callback]:
    """Dev scoring (by the chief), the history, the best weights, early stopping, the backup to resume from."""
    selection = DecodeOptions(beam_size=config.select_beam)  # the search that picks the best epoch
    dev_scores = (ChiefDevScores(role.strategy, *dev, options=selection) if role.multi_worker
                  else DevScores(*dev, options=selection))
    callbacks = [
        dev_scores,
        keras.callbacks.CSVLogger(str(files / "history.csv"), append=True),
        _BestWeights(files / "best.weights.h5", monitor, mode, best),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=config.patience,
                                      restore_best_weights=True),
        _Backup(str(output / "backup"), files / "backup", delete_checkpoint=False),  # deleted once saved
    ]
    if config.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5,
                                                           patience=1, min_lr=1e-5))
    return callbacks


def _fit(config: TrainConfig, role: Role, trainer: keras.Model, train_ds: tf.data.Dataset,
         dev_ds: tf.data.Dataset | None, callbacks: list[keras.callbacks.Callback], files: Path,
         log: Callable[[str], None]) -> bool:
    """Run the epochs; True if interrupted (Ctrl-C) after at least one epoch, whose best weights are then saved."""
    try:
        if role.multi_worker:
            fit_multi_worker(trainer, role.strategy, train_ds, dev_ds, config.epochs, callbacks, log)
        else:
            trainer.fit(train_ds, validation_data=dev_ds, epochs=config.epochs, callbacks=callbacks, shuffle=False,
                        steps_per_epoch=config.eval_every)  # the tf.data pipeline shuffles
    except KeyboardInterrupt:
        if not (files / "best.weights.h5").is_file():
            raise CaptionerError(f"training interrupted before the first epoch ended; nothing to save in "
                                 f"{config.output}.") from None
        log(f"interrupted: saving the best epoch so far; the same command resumes from "
            f"{Path(config.output) / 'backup'}")
        return True
    return False
