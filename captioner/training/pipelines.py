"""tf.data input pipelines for training: cached feature grids streamed from disk with their captions."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from captioner.data.datasets import CaptionDataset
from captioner.data.mirror import mirror_caption
from captioner.features.cache import FeatureTable
from captioner.features.class_row import ClassRowTable
from captioner.text.vocabulary import Vocabulary

Features = FeatureTable | ClassRowTable | np.ndarray  # anything with .shape and numpy-style row indexing


def _gather(features: Features, index: tf.Tensor) -> tf.Tensor:
    """The grids of a batch of image rows, read from the table as float32: (batch, cells, channels)."""
    grid = tf.numpy_function(lambda rows: features[rows].astype(np.float32), [index], tf.float32,
                             stateful=False)
    grid.set_shape((None, *features.shape[1:]))
    return grid


def split_captions(dataset: CaptionDataset, names: list[str], lang: str, tokenization: str,
                   mirrored: bool = False) -> list[list[str]]:
    """Each image's captions; with mirrored=True those of the mirrored photo ("left" and "right" swapped)."""
    if not mirrored:
        return [dataset.captions[name] for name in names]
    return [[mirror_caption(c, lang, tokenization) for c in dataset.captions[name]] for name in names]


def views(hflip: bool) -> tuple[bool, ...]:
    """Which photos a training table holds, in row order: the originals, then with hflip their mirror images."""
    return (False, True) if hflip else (False,)


def encode_split(dataset: CaptionDataset, names: list[str], vocab: Vocabulary,
                 hflip: bool = False) -> tuple[np.ndarray, list[list[int]]]:
    """(image row of each caption, token ids of each caption) for the images `names`, in that order.

    hflip=True: then the same again for the mirrored photos, whose rows follow the originals'."""
    index, sequences = [], []
    for mirrored in views(hflip):
        for row, captions in enumerate(split_captions(dataset, names, vocab.lang, vocab.tokenization, mirrored)):
            for caption in captions:
                index.append(row + mirrored * len(names))
                sequences.append(vocab.encode(caption))
    return np.array(index), sequences


def caption_dataset(features: Features, image_index: np.ndarray, sequences: list[list[int]],
                    batch_size: int, shuffle: bool, seed: int = 0) -> tf.data.Dataset:
    """((features, input tokens), target tokens) batches, bucketed by caption length.

    Only caption rows are shuffled and batched; each batch's grids are then read from `features`
    (a FeatureTable reads them from disk), so five captions of one image never copy its grid five
    times and the dataset never sits in memory whole.
    """
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
        grid = _gather(features, index)  # (batch, cells, channels)
        return (grid, tokens[:, :-1]), tokens[:, 1:]  # teacher forcing: predict the next token

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def image_dataset(features: Features, batch_size: int, seed: int = 0) -> tf.data.Dataset:
    """Shuffled (features, image index) batches, one row per image (for self-critical training)."""
    ds = tf.data.Dataset.range(len(features)).shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda index: (_gather(features, index), index),
                                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
