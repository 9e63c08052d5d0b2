"""Grounding measures on hand-made captions: objects named, invented objects (CHAIR), held-out concepts and F1."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import FLICKR8K, missing_input

from captioner.data.datasets import CaptionDataset
from captioner.errors import CaptionerError
from captioner.evaluation.grounding import concept_f1, grounding_report, hallucination
from captioner.text.objects import mentioned_objects, naming_words, object_names, parse_concepts, without_concepts
from captioner.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = ["bicycle", "boat", "car", "bird", "motorcycle", "bench"]  # configs/flickr8k_heldout.yaml


@pytest.mark.parametrize(("caption", "objects"), [
    ("A black lab and two puppies run", {"dog"}),
    ("a man eats a hot dog", {"person", "hot dog"}),  # the longest phrase wins: no dog here
    ("A boy rides his dirt bike past two bikes", {"person", "motorcycle", "bicycle"}),
    ("Children play on the grass near the water", {"person"}),  # scene stuff is not an object
    ("a dog's ball", {"dog", "ball"}),
    ("", set()),
])
def test_mentioned_objects(caption, objects):
    assert mentioned_objects(caption) == objects
    assert mentioned_objects(caption.split()) == objects  # a caption's words give the same answer


def test_hallucination_counts_objects_no_reference_names():
    references = {"a": ["A puppy runs through the grass ."],
                  "b": ["A boy rides a bicycle .", "A child on a bike ."],
                  "c": ["A cat sits on a table ."]}
    captions = {"a": "a dog runs on the grass",  # dog = puppy: nothing invented
                "b": "a man and a dog on a bike",  # man = person, bike = bicycle; the dog is invented
                "c": "a cat sits on a hot dog with a ball"}  # the hot dog and the ball are invented, the cat is not
    scores = hallucination(captions, references)
    assert scores["CHAIR_s"] == pytest.approx(2 / 3)  # two of three captions invent something
    assert scores["CHAIR_i"] == pytest.approx(3 / 7)  # three of the seven objects named
    assert (scores["objects named"], scores["objects invented"]) == (7, 3)


def test_hallucination_of_nothing_named_is_zero():
    assert hallucination({"a": "a red circle"}, {"a": ["a blue square"]})["CHAIR_i"] == 0.0


def test_concept_f1_counts_photos_whose_references_name_the_concept():
    references = {"1": ["a man rides a bike"], "2": ["a boy on a bicycle"], "3": ["a dog runs"],
                  "4": ["a canoe on a lake"]}
    captions = {"1": "a man rides a bicycle", "2": "a boy runs", "3": "a dog rides a bike", "4": "a boat"}
    scores = concept_f1(captions, references, "bicycle, boat")
    assert scores["bicycle"] == pytest.approx(2 * 1 / (2 + 2))  # 1 hit, 2 true photos, 2 said
    assert scores["boat"] == pytest.approx(1.0)
    assert scores["mean"] == pytest.approx(0.75)
    assert concept_f1({"3": "a dog"}, references, ["boat"])["boat"] == 0.0  # never named, never true


def test_without_concepts_removes_training_photos_that_show_them():
    dataset = CaptionDataset(Path("images"), {
        "t1.jpg": ["A man rides a bike .", "A cyclist on a mountain road ."],  # one caption names it: out too
        "t2.jpg": ["Two bicycles .", "A BMX jump ."],
        "t3.jpg": ["A dog runs .", "A dog on the grass ."],
        "d1.jpg": ["A girl on a bike ."]}, {"train": ["t1.jpg", "t2.jpg", "t3.jpg"], "dev": ["d1.jpg"]})
    kept = without_concepts(dataset, ["bicycle"])
    assert kept.split("train") == ["t3.jpg"]
    assert kept.captions["t3.jpg"] == ["A dog runs .", "A dog on the grass ."]  # the others keep every caption
    assert kept.captions["d1.jpg"] == ["A girl on a bike ."]  # dev keeps its references
    assert "t1.jpg" not in kept.captions and "t2.jpg" not in kept.captions
    assert dataset.split("train") == ["t1.jpg", "t2.jpg", "t3.jpg"]  # the original is untouched


def test_unknown_concept_is_a_one_line_error():
    with pytest.raises(CaptionerError, match="unknown held-out concepts \\['unicorn'\\]"):
        parse_concepts("bicycle, unicorn")


def test_recipe_records_held_out_concepts():
    config = TrainConfig.from_file(ROOT / "configs" / "flickr8k_heldout.yaml")
    assert config.held_out_concepts == ", ".join(HELD_OUT)  # a YAML list, stored in the model file as text
    assert TrainConfig(data="x").held_out_concepts is None
    with pytest.raises(CaptionerError, match="unknown held-out concepts"):
        TrainConfig(data="x", held_out_concepts="bike")  # an object name is wanted, not a synonym


def test_report_has_held_out_rows_only_for_held_out_models():
    captions = {"dev greedy": {"1": "a man rides a bike"}}
    references = {"1": ["a man on a bicycle"]}
    assert "held-out F1" not in grounding_report(captions, references)
    report = grounding_report(captions, references, "bicycle")
    assert "CHAIR_s" in report and "held-out F1" in report and "1.000" in report.splitlines()[-1]


@pytest.mark.parametrize(("word", "names"), [
    ("dog", {"dog", "dogs", "puppy", "puppies"}),  # a subset: the table has more breeds
    ("hot dog", {"hotdog", "hotdogs"}),  # an object whose name is two words: its one-word names
    ("grass", {"grass"}),  # no object of the table: the word itself
])
def test_naming_words_are_the_one_word_names_of_the_object(word, names):
    assert names <= naming_words(word) and all(" " not in w for w in naming_words(word))
    assert not naming_words(word) & naming_words("hot dog" if word == "dog" else "dog")  # a hot dog is no dog


def test_every_object_has_a_distinct_name():
    assert len(object_names()) == len(set(object_names())) >= 50


def test_held_out_concepts_have_enough_dev_photos():
    """docs/grounding.md's table: each held-out concept is named by at least 15 dev photos' references."""
    captions_file, dev_list = FLICKR8K / "captions.txt", FLICKR8K / "Flickr_8k.devImages.txt"
    if not captions_file.is_file() or not dev_list.is_file():
        missing_input(captions_file, "Flickr8k captions and dev split list")
    dev = set(dev_list.read_text().split())
    photos: dict[str, set[str]] = {concept: set() for concept in HELD_OUT}
    with captions_file.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["image"] in dev:
                for concept in mentioned_objects(row["caption"]) & set(HELD_OUT):
                    photos[concept].add(row["image"])
    counts = {concept: len(images) for concept, images in photos.items()}
    assert counts == {"bicycle": 62, "boat": 29, "car": 22, "bird": 18, "motorcycle": 17, "bench": 15}
