"""Grounded captions: Show, Attend and Tell that also reads the classifier's top tags and can copy their words.

The tags (the top TAGS_TOP_K ImageNet classes of the photo and their probabilities) are a second memory the
decoder attends to, and a pointer-generator output (See et al. 2017; LSTM-C, Yao et al. 2017) mixes the
vocabulary softmax with a copy distribution over the tags' caption words:

    p(w) = g · softmax(L_o …)_w + (1 − g) · Σ_k γ_k [word(tag_k) = w]

where the generator's softmax leaves out the words of the photo's own tags: those are always copied, so training
on the words it knows (dog, ball) teaches the copy path that then writes the words it never saw (zebra).

A tag is represented by its class's row of the classifier's weights, projected: no word vectors from outside
are needed, and the same vector is the input embedding of a copied word, so a word no training caption wrote
(a held-out concept, "zebra") can be copied and read back. The model file's vocabulary is the caption
vocabulary extended with every tag word it lacks (captioner.features.class_row.tag_words).

The classifier's probabilities reach the decoder as one extra row of its features (class_row.with_class_row),
so every search, ensemble and export passes them without a signature of its own. The attention it returns
has one extra column too: the copy gate's weight 1 − g at each step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import layers, ops

from captioner.errors import CaptionerError
from captioner.features.imagenet import NUM_CLASSES
from captioner.features.tags import TAGS_TOP_K
from captioner.models.base import Tensor, register_decoder
from captioner.models.sat import ShowAttendTell, SoftAttention, per_row, weighted_sum

NEG = -1e9  # the generator's logit for the photo's tag words, which only the copy path writes
TINY = 1e-9  # floor inside the log: a word neither path writes gets log(TINY), not -inf


@register_decoder("grounded")
class GroundedDecoder(ShowAttendTell):
    """ShowAttendTell + a memory of the photo's top tags + a copy gate that can write a tag's caption word.

    `class_words` holds each ImageNet class's caption-word id in this model's vocabulary (-1: no word);
    `class_vectors` (classes, dim), a non-trainable weight, the classifier's rows (set_class_vectors).
    """

    def __init__(self, vocab_size: int, class_words: list[int] | None = None, class_dim: int = 1280,
                 tags: int = TAGS_TOP_K, **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        self.class_words = list(class_words) if class_words is not None else [-1] * NUM_CLASSES
        self.class_dim = class_dim
        self.tags = tags
        self.tag_embedding = layers.Dense(self.embedding_dim, use_bias=False, name="tag_embedding")
        self.tag_attention = SoftAttention(self.attention_units, name="tag_attention")
        self.copy_attention = SoftAttention(self.attention_units, name="copy_attention")
        self.copy_gate = layers.Dense(1, name="copy_gate")
        self.out_tags = layers.Dense(self.embedding_dim, use_bias=False, name="out_tags")

    def build(self, input_shape: tuple[Any, ...]) -> None:
        features_shape, _ = input_shape
        cells, channels = features_shape[1] - 1, features_shape[-1]  # the last row holds the probabilities
        if channels < len(self.class_words):
            raise CaptionerError(f"the grounded decoder needs feature grids of at least {len(self.class_words)} "
                                 f"channels to carry the class probabilities; this encoder gives {channels}.")
        tag_width = self.embedding_dim + 1  # projected class vector and its probability
        self.embedding.build((None,))
        for layer in (self.init_h, self.init_c, self.out_z):
            layer.build((None, channels))
        self.attention.build((None, cells, channels), (None, self.units))
        self.gate.build((None, self.units))
        self.cell.build((None, self.embedding_dim + channels + tag_width))  # reads [E y, z, tag context]
        self.out_h.build((None, self.units))
        self.out_vocab.build((None, self.embedding_dim))
        self.class_vectors = self.add_weight(shape=(len(self.class_words), self.class_dim), initializer="zeros",
                                             trainable=False, name="class_vectors")
        self.tag_embedding.build((None, self.class_dim))
        self.tag_attention.build((None, self.tags, tag_width), (None, self.units))
        self.copy_attention.build((None, self.tags, self.tags + 2), (None, self.units))
        self.copy_gate.build((None, self.units + channels + tag_width + self.embedding_dim))
        self.out_tags.build((None, tag_width))
        self.copy_prior = self.add_weight(shape=(), initializer="ones", name="copy_prior")
        self.copied_embedding = self.add_weight(shape=(self.embedding_dim,), initializer="random_uniform",
                                                name="copied_embedding")

    def set_class_vectors(self, kernel: np.ndarray) -> None:
        """Store the classifier's weights, kernel (dim, classes), as one unit-length vector per class."""
        rows = np.asarray(kernel, np.float32).T  # (classes, dim)
        self.class_vectors.assign(rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6))

    def prepare(self, features: Tensor, training: bool = False) -> tuple[dict[str, Any], list[Any]]:
        """Memory: the grid and its attention keys, and the tags (keys, values, word ids); state from the grid."""
        grid = features[:, :-1]  # (batch, cells, channels)
        probabilities = features[:, -1, : len(self.class_words)]  # (batch, classes)
        top, classes = ops.top_k(probabilities, self.tags)  # (batch, K) each
        vectors = ops.take(self.class_vectors, classes, axis=0)  # (batch, K, dim)
        embedded = self.tag_embedding(vectors)  # (batch, K, E): also the input embedding of a copied word
        values = ops.concatenate([embedded, ops.expand_dims(top, -1)], axis=-1)  # (batch, K, E + 1)
        words = ops.take(ops.convert_to_tensor(np.array(self.class_words, np.float32)), classes)  # (batch, K)
        targets = ops.one_hot(ops.cast(ops.maximum(words, 0.0), "int32"), self.vocab_size)  # (batch, K, V)
        targets = targets * ops.expand_dims(ops.cast(words >= 0.0, "float32"), -1)  # no word: no copy target
        memory = {"grid": grid, "keys": self.attention.project_keys(grid),  # (batch, cells, ·)
                  "tag_values": values, "tag_keys": self.tag_attention.project_keys(values),
                  "copy_keys": self.copy_attention.project_keys(self._rank_features(top)),  # (batch, K, A)
                  "tag_log_probs": ops.log(top + TINY),  # (batch, K)
                  "tag_words": words,  # (batch, K) float ids, -1 for a class with no caption word
                  "copy_targets": targets,  # (batch, K, V) one-hot rows of the tags' words
                  "tag_mask": ops.minimum(ops.sum(targets, axis=1), 1.0)}  # (batch, V): 1 for the tags' words
        return memory, self._initial_state(grid)

    def _rank_features(self, top: Tensor) -> Tensor:
        """What the copy attention knows of a tag: its probability, log-probability and rank, not its class, so
        that it copies a class no training caption named as readily as one they did (the held-out concepts)."""
        ranks = ops.broadcast_to(ops.eye(self.tags), (ops.shape(top)[0], self.tags, self.tags))  # (batch, K, K)
        return ops.concatenate([ops.expand_dims(top, -1), ops.expand_dims(ops.log(top + TINY), -1), ranks],
                               axis=-1)  # (batch, K, K + 2)

    def _embed(self, tokens: Tensor, memory: dict[str, Any], training: bool | None) -> Tensor:
        """E y, or when y is the caption word of one of the photo's tags, that tag's class vector projected: a
        copied word reads the same whether or not any training caption wrote it."""
        words = per_row(memory["tag_words"], tokens)  # (rows, K)
        match = ops.cast(ops.equal(words, ops.cast(ops.expand_dims(tokens, -1), "float32")), "float32")  # (rows, K)
        matched = ops.minimum(ops.sum(match, axis=-1, keepdims=True), 1.0)  # (rows, 1)
        tag_vector = weighted_sum(match / ops.maximum(ops.sum(match, axis=-1, keepdims=True), 1.0),
                                  memory["tag_values"])[:, : self.embedding_dim]  # (rows, E)
        copied = self.copied_embedding + tag_vector  # (rows, E): "a tag's word", and which
        embedded = matched * copied + (1.0 - matched) * self.embedding(tokens)  # (rows, E)
        return self.dropout(embedded, training=training)

    def step(self, tokens: Tensor, state: list[Any], memory: dict[str, Any], training: bool = False) -> Any:
        """Previous tokens (rows,) → log p (rows, V) of the generate/copy mixture, [α, 1 − g] (rows, cells + 1)."""
        embedded = self._embed(tokens, memory, training)  # (rows, E)
        h, c = state
        alpha = self.attention.attend(memory["keys"], h)  # (rows, cells)
        context = self.gate(h) * weighted_sum(alpha, memory["grid"])  # (rows, channels)
        beta = self.tag_attention.attend(memory["tag_keys"], h)  # (rows, K)
        tag_context = weighted_sum(beta, memory["tag_values"])  # (rows, E + 1)
        h, (_, c) = self.cell(ops.concatenate([embedded, context, tag_context], axis=-1), [h, c])  # (rows, units)
        generated = self._readout(embedded, h, self.out_z(context) + self.out_tags(tag_context), training)  # (rows, V)
        generated = generated + NEG * per_row(memory["tag_mask"], tokens)  # a tag's word is copied, not generated
        # Which tag to copy: the attention's score plus the tag's log-probability, scaled: a prior that does not
        # depend on the class, so tags no training caption named are copied when the classifier is sure of them.
        scores = self.copy_attention.scores(memory["copy_keys"], h)  # (rows, K)
        gamma = ops.softmax(scores + self.copy_prior * per_row(memory["tag_log_probs"], tokens), axis=-1)  # (rows, K)
        copied = weighted_sum(gamma, memory["copy_targets"])  # (rows, V): the tag attention on each word
        gate = self.copy_gate(ops.concatenate([h, context, tag_context, embedded], axis=-1))  # (rows, 1) logit
        mixed = ops.sigmoid(gate) * ops.softmax(generated, axis=-1) + ops.sigmoid(-gate) * copied  # (rows, V)
        log_probs = ops.log(mixed + TINY)  # (rows, V); in probability space, which every export format has
        shown = ops.concatenate([alpha, ops.sigmoid(-gate)], axis=-1)  # (rows, cells + 1)
        return log_probs, shown, [h, c]

    def call(self, inputs: Tensor, training: bool | None = None) -> Any:
        """Teacher forcing, by the step itself: features (batch, cells + 1, C), tokens (batch, T) → log p, α."""
        features, tokens = inputs
        memory, state = self.prepare(features)

        def body(carry: list[Any], tokens_t: Tensor) -> Any:
            # keras.ops.scan stacks outputs shaped like the carry, so the carry holds them too.
            log_probs, shown, new_state = self.step(tokens_t, carry[:2], memory, training=bool(training))
            outputs = [*new_state, log_probs, shown]
            return outputs, outputs

        batch = ops.shape(features)[0]
        first = [*state, ops.zeros((batch, self.vocab_size)), ops.zeros((batch, features.shape[1]))]
        _, (_, _, log_probs, shown) = ops.scan(body, first, ops.transpose(tokens))  # (T, batch, ·) each
        return ops.transpose(log_probs, (1, 0, 2)), ops.transpose(shown, (1, 0, 2))  # (batch, T, ·)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "class_words": self.class_words, "class_dim": self.class_dim,
                "tags": self.tags}
