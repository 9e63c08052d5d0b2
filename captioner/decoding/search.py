"""Greedy decoding and beam search for batches of feature grids, in NumPy: the loops of captioner.decoding.loops
run eagerly, and their arrays turned into Captions.

The Keras path (captioner.decoding.tf_search.TFSearch) is this class with the loops compiled by
TensorFlow, so both make the same Captions from the same arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from captioner.decoding.arrays import NUMPY, Array, ArrayOps
from captioner.decoding.constraints import NEG_INF
from captioner.decoding.loops import SearchSettings, beam_loop, greedy_loop
from captioner.decoding.options import DEFAULT_DECODING, GREEDY, Caption, DecodeOptions
from captioner.text.vocabulary import Vocabulary

if TYPE_CHECKING:  # the decoder contract's module imports Keras; the searches run without it
    from captioner.models.base import StepDecoder


class Search:
    """Greedy decoding and beam search for batches of feature grids with any StepDecoder."""

    def __init__(self, decoder: StepDecoder, vocab: Vocabulary, max_length: int | None = None,
                 ops: ArrayOps = NUMPY):
        self.decoder = decoder
        self.vocab = vocab
        self.max_length = max_length or vocab.max_length + 2
        self.ops = ops

    def _inputs(self, features: np.ndarray) -> Array:
        """The batch as the loops take it."""
        return np.asarray(features, np.float32)  # (n, cells, channels); cached features are float16

    def _greedy(self, features: Array, settings: SearchSettings) -> tuple[Any, ...]:
        return greedy_loop(self.ops, self.decoder, self.vocab, features, settings)

    def _beam(self, features: Array, settings: SearchSettings) -> tuple[Any, ...]:
        return beam_loop(self.ops, self.decoder, self.vocab, features, settings)

    def _to_caption(self, tokens: np.ndarray, log_prob: float, alpha: np.ndarray, penalty: float) -> Caption:
        ids = np.asarray(tokens).tolist()  # Python ints: the vocabulary reads them one by one
        words = self.vocab.words(ids)
        ended = self.vocab.end_id in ids  # False: cut at max_length
        length = len(words) + ended
        return Caption(self.vocab.join(words), words, float(log_prob), alpha[: len(words)],
                       score=float(log_prob) / length**penalty, ended=ended)

    def _greedy_captions(self, outputs: tuple[Any, ...], penalty: float, n: int) -> list[Caption]:
        """Captions from the greedy (tokens, log p, α) outputs of the first n rows."""
        tokens, log_probs, alpha = (np.asarray(x)[:n] for x in outputs)
        return [self._to_caption(row_tokens, row_logp.sum(), row_alpha, penalty)
                for row_tokens, row_logp, row_alpha in zip(tokens, log_probs, alpha, strict=True)]

    def greedy(self, features: np.ndarray, options: DecodeOptions = GREEDY) -> list[Caption]:
        """Most likely next word at every step, for a batch of (cells, channels) grids (beam_size is ignored)."""
        if len(features) == 0:
            return []
        settings = SearchSettings.of(options, self.max_length)._replace(beam_size=1, keep=1)  # one trace per rule set
        outputs = self._greedy(self._inputs(features), settings)
        return self._greedy_captions(outputs, options.length_penalty, len(features))

    def beam(self, features: np.ndarray, options: DecodeOptions = DEFAULT_DECODING) -> list[Caption]:
        """Beam search; each caption's `ranked` is its n-best list (distinct, best first).

        The greedy caption is always a candidate, so a wider beam never returns a caption that
        scores lower than greedy decoding under the same length normalisation.
        """
        if options.beam_size == 1 or len(features) == 0:
            return self.greedy(features, options)
        *outputs, greedy = self._beam(self._inputs(features), SearchSettings.of(options, self.max_length))
        seqs, scores, norms, alphas = (np.asarray(x) for x in outputs)
        results = []
        for i, fallback in enumerate(self._greedy_captions(greedy, options.length_penalty, len(features))):
            pool = {fallback.text: fallback}
            for j in np.argsort(-norms[i]):
                if scores[i, j] <= NEG_INF / 2:  # an empty slot, or a hypothesis through a blocked token
                    continue
                caption = self._to_caption(seqs[i, j], scores[i, j], alphas[i, j], options.length_penalty)
                if caption.text not in pool or pool[caption.text].score < caption.score:
                    pool[caption.text] = caption
            ranked = sorted(pool.values(), key=lambda c: -c.score)[: max(options.n_best, 1)]
            best = ranked[0]
            best.alternatives = ranked[1:]
            results.append(best)
        return results

    def generate(self, features: np.ndarray, options: DecodeOptions = DEFAULT_DECODING) -> list[Caption]:
        """Captions for a batch of feature grids; by default beam 3 (DecodeOptions()), GREEDY for greedy."""
        return self.greedy(features, options) if options.beam_size == 1 else self.beam(features, options)
