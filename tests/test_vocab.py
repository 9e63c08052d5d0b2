"""Caption cleaning and the vocabulary, in any language and script."""

from __future__ import annotations

import pytest

from captioner.errors import ArtifactError
from captioner.text.vocabulary import Vocabulary, clean_text, join_tokens, tokenize


def test_english_cleaning_keeps_inner_apostrophes_and_hyphens():
    assert clean_text("A MAN'S dog, wearing a T-shirt, runs!") == "a man's dog wearing a t-shirt runs"
    assert tokenize("  Two   dogs ... play  ") == ["two", "dogs", "play"]


def test_german_umlauts_and_sharp_s_survive():
    assert tokenize("Ein Mädchen läuft über die Straße.") == ["ein", "mädchen", "läuft", "über", "die", "straße"]


def test_unicode_normalisation_merges_composed_and_decomposed_forms():
    assert tokenize("cafe\u0301") == tokenize("café") == ["café"]


def test_non_latin_scripts_with_spaces():
    assert tokenize("Собака бежит по траве.") == ["собака", "бежит", "по", "траве"]
    assert tokenize("كلب يركض في العشب") == ["كلب", "يركض", "في", "العشب"]
    assert tokenize("कुत्ता घास पर दौड़ता है।") == ["कुत्ता", "घास", "पर", "दौड़ता", "है"]  # combining marks kept


def test_chinese_character_tokenization_round_trips():
    text = "一只黑色的狗在草地上奔跑"
    tokens = tokenize(text + "。", "chars")
    assert tokens == list(text)
    assert join_tokens(tokens, "chars") == text
    assert tokenize("两个人在玩iPhone 15", "chars") == ["两", "个", "人", "在", "玩", "iphone", "15"]
    assert join_tokens(["玩", "iphone", "15"], "chars") == "玩iphone 15"


def test_vocabulary_build_encode_decode():
    captions = ["a dog runs", "a dog sits", "a cat runs", "a bird"]
    vocab = Vocabulary.build(captions, min_count=2, max_length=4)
    assert vocab.tokens[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert vocab.tokens[4:] == ["a", "dog", "runs"]  # by frequency, then alphabetically
    ids = vocab.encode("A dog sits quietly here today")
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id and len(ids) == 4 + 2
    assert vocab.decode(ids) == "a dog <unk> <unk>"
    assert vocab.decode([vocab.tokens.index("a"), vocab.end_id, vocab.tokens.index("dog")]) == "a"


def test_vocabulary_for_chinese_decodes_without_spaces():
    vocab = Vocabulary.build(["小狗在跑", "小猫在睡"], min_count=1, tokenization="chars", lang="zh")
    assert vocab.decode(vocab.encode("小狗在睡")) == "小狗在睡"


def test_plain_data_round_trip_and_tamper_detection():
    vocab = Vocabulary.build(["über alles", "straße"], min_count=1, lang="de")
    data = vocab.to_dict()
    assert Vocabulary.from_dict(data) == vocab
    data["tokens"] = [*data["tokens"], "extra"]
    with pytest.raises(ArtifactError, match="altered"):
        Vocabulary.from_dict(data)
    with pytest.raises(ArtifactError, match="not a captioner vocabulary"):
        Vocabulary.from_dict({"word_index": {}})
    grounded = Vocabulary([*vocab.tokens, "zebra"], tag_words=1)  # a grounded model's appended tag word
    assert Vocabulary.from_dict(grounded.to_dict()).tag_words == 1
    assert Vocabulary.from_dict({k: v for k, v in grounded.to_dict().items() if k != "tag_words"}).tag_words == 0
    with pytest.raises(ArtifactError, match="so not 9 tag words"):
        Vocabulary([*vocab.tokens], tag_words=9)
