"""CIDEr-D as a training reward: document frequencies fixed on the training references."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from captioner.text.vocabulary import END

NGRAMS = 4
SIGMA = 6.0


def _ngrams(words: Sequence[str]) -> Counter:
    return Counter(tuple(words[i:i + n]) for n in range(1, NGRAMS + 1) for i in range(len(words) - n + 1))


class CiderD:
    """CIDEr-D (Vedantam et al. 2015, as in pycocoevalcap) with document frequencies fixed on a
    reference corpus, so a batch of sampled captions is scored against training-set statistics.

    pycocoevalcap recomputes frequencies from whatever it is given, which for a batch of a few
    images would make every n-gram look rare; hence this scorer for rewards. Captions end with
    <end> (`mark_end`) so that captions cut off mid-phrase ("a dog in a") lose the final n-grams.
    """

    def __init__(self, corpus: Sequence[Sequence[Sequence[str]]], mark_end: bool = True):
        self.suffix = [END] if mark_end else []
        document_frequency: Counter = Counter()
        for refs in corpus:
            document_frequency.update({g for ref in refs for g in _ngrams([*ref, *self.suffix])})
        self.log_corpus = np.log(float(len(corpus)))
        self.document_frequency = document_frequency
        self._refs = [[self._vector(ref) for ref in refs] for refs in corpus]

    def _vector(self, words: Sequence[str]) -> tuple[list[dict], np.ndarray, int]:
        """tf-idf vectors per n-gram order, their norms and the caption length."""
        vectors: list[dict] = [{} for _ in range(NGRAMS)]
        for gram, count in _ngrams([*words, *self.suffix]).items():
            idf = self.log_corpus - np.log(max(1.0, self.document_frequency[gram]))
            vectors[len(gram) - 1][gram] = count * idf
        norms = np.array([np.sqrt(sum(v * v for v in vec.values())) for vec in vectors])
        return vectors, norms, len(words)

    def score(self, words: Sequence[str], corpus_index: int) -> float:
        """CIDEr-D of one caption against the references of corpus item `corpus_index`."""
        vec, norm, length = self._vector(words)
        total = np.zeros(NGRAMS)
        for ref_vec, ref_norm, ref_length in self._refs[corpus_index]:
            sims = np.array([sum(min(value, ref_vec[n].get(gram, 0.0)) * ref_vec[n].get(gram, 0.0)
                                 for gram, value in vec[n].items()) for n in range(NGRAMS)])
            denominator = norm * ref_norm
            sims = np.divide(sims, denominator, out=np.zeros(NGRAMS), where=denominator != 0)
            total += sims * np.exp(-((length - ref_length) ** 2) / (2 * SIGMA**2))
        return float(total.mean() / len(self._refs[corpus_index]) * 10.0)
