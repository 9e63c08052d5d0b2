"""The repetition measure: a noun phrase opened twice, distinct captions and words."""

from __future__ import annotations

from captioner.evaluation.repetition import repeated_noun_phrases, repetition_stats


def test_a_noun_phrase_opened_twice_is_found_and_modifiers_may_repeat():
    assert repeated_noun_phrases(["a", "baby", "is", "holding", "a", "baby"]) == ["baby"]
    assert repeated_noun_phrases(["a", "woman", "and", "woman", "are", "sitting"]) == ["woman"]
    assert repeated_noun_phrases(["a", "man", "is", "riding", "a", "bicycle", "on", "a", "bicycle"]) == ["bicycle"]
    assert repeated_noun_phrases(["a", "black", "dog", "and", "a", "black", "cat"]) == []
    assert repeated_noun_phrases(["a", "dog", "runs", "after", "another", "dog"]) == []


def test_stats_count_captions_not_phrases():
    captions = ["a baby is holding a baby", "a baby holds a baby and a toy and a toy", "a dog runs", "a dog runs"]
    stats = repetition_stats(caption.split() for caption in captions)
    assert stats == {"repeat a noun phrase": 2, "distinct captions": 3, "distinct words": 9, "captions": 4}
