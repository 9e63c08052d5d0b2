"""COCO caption metrics through pycocoevalcap: English with PTB + METEOR, other languages on their own tokens."""

from __future__ import annotations

import shutil

import pytest

from captioner.errors import CaptionerError
from captioner.evaluation.metrics import format_table, score_captions, scoring_note

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need Java")

REFS = {"a": ["A dog runs on the grass.", "a brown dog is running", "the dog runs outside"],
        "b": ["Two children play in the snow!", "kids are playing in snow", "two kids in the snow"]}


@needs_java
def test_english_perfect_and_wrong_captions():
    perfect = score_captions(REFS, {"a": "a dog runs on the grass", "b": "two children play in the snow"})
    wrong = score_captions(REFS, {"a": "a red car parked by a wall", "b": "an old man reads a book"})
    assert set(perfect) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    assert perfect["BLEU-4"] > 0.9 and perfect["METEOR"] > 0.5 and perfect["CIDEr"] > 1.0
    assert all(perfect[m] > wrong[m] for m in perfect)
    assert wrong["BLEU-4"] < 0.1 and wrong["CIDEr"] < 0.2


@needs_java
def test_ptb_tokenizer_ignores_case_and_punctuation():
    plain = score_captions(REFS, {"a": "a dog runs on the grass", "b": "two kids in the snow"})
    shouty = score_captions(REFS, {"a": "A dog runs on the grass.", "b": "Two kids in the snow!"})
    assert plain == pytest.approx(shouty)


def test_chinese_is_scored_on_characters_without_meteor():
    refs = {"a": ["一只狗在草地上跑", "一只棕色的狗在奔跑"], "b": ["两个孩子在雪地里玩", "孩子们在雪里玩耍"]}
    scores = score_captions(refs, {"a": "一只狗在草地上跑", "b": "两个孩子在雪地里玩"}, lang="zh", tokenization="chars")
    assert "METEOR" not in scores and scores["BLEU-4"] > 0.9
    # Written as words (one "word" per caption) the same captions would share no 4-grams.
    words = score_captions(refs, {"a": "一只狗在草地上", "b": "两个孩子在雪地"}, lang="zh", tokenization="words")
    chars = score_captions(refs, {"a": "一只狗在草地上", "b": "两个孩子在雪地"}, lang="zh", tokenization="chars")
    assert words["BLEU-1"] == pytest.approx(0, abs=1e-6) and chars["BLEU-4"] > 0.5


@needs_java
def test_german_meteor_matches_stems_and_keeps_umlauts():
    refs = {"a": ["Ein Hund läuft über die Wiese", "ein brauner Hund rennt"], "b": ["Zwei Kinder spielen im Schnee",
                                                                                     "Kinder spielen draußen"]}
    exact = score_captions(refs, {"a": "ein hund läuft über die wiese", "b": "zwei kinder spielen im schnee"},
                           lang="de")
    stems = score_captions(refs, {"a": "ein hunde laufen über die wiesen", "b": "zwei kindern spielt im schnee"},
                           lang="de")
    other = score_captions(refs, {"a": "eine katze schläft auf dem sofa", "b": "ein mann liest ein buch"}, lang="de")
    assert exact["METEOR"] > stems["METEOR"] > other["METEOR"]


def test_no_shared_images_is_a_clear_error():
    with pytest.raises(CaptionerError, match="share no images"):
        score_captions(REFS, {"zzz": "a dog"}, meteor=False, ptb=False)


def test_scoring_note_says_how_each_language_is_scored():
    assert "PTB" in scoring_note("en", "words")
    assert "characters" in scoring_note("zh", "chars") and "METEOR not reported" in scoring_note("zh", "chars")
    assert "'de' mode" in scoring_note("de", "words") and "not the English PTB" in scoring_note("de", "words")
    assert "--fast" in scoring_note("en", "words", fast=True)


def test_table_has_a_column_per_metric_present():
    table = format_table({"dev greedy": {"BLEU-4": 0.2, "CIDEr": 0.5}, "dev beam 3": {"BLEU-4": 0.21}})
    header, greedy, beam = table.splitlines()
    assert header.split() == ["BLEU-4", "CIDEr"]
    assert greedy.split()[-2:] == ["0.2000", "0.5000"] and beam.split()[-1] == "-"
