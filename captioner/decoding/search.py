"""Greedy decoding and beam search for batches of feature grids, in NumPy: the loops of captioner.decoding.loops
run eagerly, and their arrays turned into Captions.

The Keras path (captioner.decoding.tf_search.TFSearch) is this class with the loops compiled by
TensorFlow, so both make the same Captions from the same arrays.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from captioner.decoding.arrays import NUMPY, Array, ArrayOps
from captioner.decoding.constraints import NEG_INF
from captioner.decoding.loops import SearchSettings, beam_loop, greedy_loop
from captioner.decoding.options import DEFAULT_DECODING, GREEDY, Caption, DecodeOptions
from captioner.text.vocabulary import Vocabulary

if TYPE_CHECKING:  # the decoder contract's module imports Keras; the searches run without it
    from captioner.models.base import StepDecoder

#: An image's constraint: a set of words of which its caption must write one, or several such sets, each met.
ImageConstraint: TypeAlias = Collection[str] | Sequence[Collection[str]]


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

    def _greedy(self, features: Array, settings: SearchSettings, vetoed: Array | None = None) -> tuple[Any, ...]:
        return greedy_loop(self.ops, self.decoder, self.vocab, features, settings, vetoed=vetoed)

    def _beam(self, features: Array, settings: SearchSettings, forced: Array | None = None,
              vetoed: Array | None = None) -> tuple[Any, ...]:
        return beam_loop(self.ops, self.decoder, self.vocab, features, settings, forced, vetoed)

    def _word_mask(self, word_sets: Sequence[Collection[str]], value: float) -> np.ndarray:
        """(n, V): `value` at the vocabulary's words of each image's set, 0 elsewhere."""
        mask = np.zeros((len(word_sets), len(self.vocab)), np.float32)
        for row, words in enumerate(word_sets):
            mask[row, self.vocab.ids(words)] = value  # words outside the vocabulary are skipped
        return mask

    def _vetoed(self, vetoes: Sequence[Collection[str]] | None, n: int) -> Array | None:
        """(n, V): NEG_INF for the words each image's captions may not write, or None when no image has any."""
        if vetoes is not None and len(vetoes) != n:
            raise ValueError(f"{len(vetoes)} vetoes for {n} images; give one (maybe empty) set an image.")
        return self._inputs(self._word_mask(vetoes, NEG_INF)) if vetoes and any(vetoes) else None

    def _wanted(self, constraints: Sequence[ImageConstraint] | None, n: int) -> list[list[set[str]]]:
        """Each image's constraints, each as the words of the vocabulary it names (the others cannot be written);
        a constraint with none of them is dropped."""
        if constraints is None:
            return [[] for _ in range(n)]
        if len(constraints) != n:
            raise ValueError(f"{len(constraints)} constraints for {n} images; give one (maybe empty) set an image.")
        writable = set(self.vocab.tokens[self.vocab.unk_id + 1:])  # no special token can be required
        wanted = []
        for constraint in constraints:
            sets = [constraint] if all(isinstance(word, str) for word in constraint) else constraint
            wanted.append([found for words in sets if (found := writable.intersection(words))])
        return wanted

    def _forced(self, wanted: list[list[set[str]]]) -> np.ndarray | None:
        """(n, m, V): 1 for the words of each image's constraint j (m: the most any image has); None when no image
        has any."""
        m = max((len(sets) for sets in wanted), default=0)
        if not m:
            return None
        return np.stack([self._word_mask([sets[j] if j < len(sets) else set() for sets in wanted], 1.0)
                         for j in range(m)], axis=1)  # (n, m, V)

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

    def greedy(self, features: np.ndarray, options: DecodeOptions = GREEDY,
               vetoes: Sequence[Collection[str]] | None = None) -> list[Caption]:
        """Most likely next word at every step, for a batch of (cells, channels) grids (beam_size is ignored);
        `vetoes` (a set of words an image) are never written."""
        if len(features) == 0:
            return []
        settings = SearchSettings.of(options, self.max_length)._replace(beam_size=1, keep=1)  # one trace per rule set
        outputs = self._greedy(self._inputs(features), settings, vetoed=self._vetoed(vetoes, len(features)))
        return self._greedy_captions(outputs, options.length_penalty, len(features))

    def generate(self, features: np.ndarray, options: DecodeOptions = DEFAULT_DECODING,
                 constraints: Sequence[ImageConstraint] | None = None,
                 vetoes: Sequence[Collection[str]] | None = None) -> list[Caption]:
        """Captions for a batch of feature grids: by default beam 3 (DecodeOptions()), GREEDY for greedy decoding;
        each caption's `ranked` is its n-best list (distinct, best first).

        The greedy caption is always a candidate, so a wider beam never returns a caption that scores lower than
        greedy decoding under the same length normalisation. With `constraints` (a set of words an image, or
        several sets), constrained beam search: an image's captions write one of the words of each set that the
        vocabulary has, unless no such caption was found within max_length, when the best unconstrained ones are
        given; an empty set is plain search. `vetoes` (a set of words an image) are never written.
        """
        wanted = self._wanted(constraints, len(features))
        forced = self._forced(wanted)
        if (options.beam_size == 1 and forced is None) or len(features) == 0:
            return self.greedy(features, options, vetoes)
        settings = SearchSettings.of(options, self.max_length, 0 if forced is None else forced.shape[1])
        *outputs, greedy = self._beam(self._inputs(features), settings,
                                      None if forced is None else self._inputs(forced),
                                      self._vetoed(vetoes, len(features)))
        seqs, scores, norms, alphas = (np.asarray(x) for x in outputs)
        results = []
        for i, fallback in enumerate(self._greedy_captions(greedy, options.length_penalty, len(features))):
            if options.beam_size == 1 and not wanted[i]:  # greedy, as if no image had a constraint
                results.append(fallback)
                continue
            pool = {fallback.text: fallback}
            for j in np.argsort(-norms[i]):
                if scores[i, j] <= NEG_INF / 2:  # an empty slot, or a hypothesis through a blocked token
                    continue
                caption = self._to_caption(seqs[i, j], scores[i, j], alphas[i, j], options.length_penalty)
                if caption.text not in pool or pool[caption.text].score < caption.score:
                    pool[caption.text] = caption
            met = [c for c in pool.values() if all(words.intersection(c.words) for words in wanted[i])]
            ranked = sorted(met or pool.values(), key=lambda c: -c.score)[: max(options.n_best, 1)]
            best = ranked[0]
            best.alternatives = ranked[1:]
            results.append(best)
        return results
