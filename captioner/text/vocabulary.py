"""Caption cleaning and the Vocabulary: Unicode-aware tokens ↔ ids, saved as plain data."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from captioner.errors import ArtifactError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
TOKENIZATIONS = ("words", "chars")
_JOINERS = "'’-"  # kept inside words: "man's", "l'homme", "t-shirt"
#: Words (or characters) a training caption keeps; decoding allows two tokens more (<end> and slack).
MAX_CAPTION_LENGTH = 25


def _is_word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in "LMN"


def _is_ideograph(char: str) -> bool:
    """Scripts written without spaces, tokenized one character at a time."""
    code = ord(char)
    return (0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x4DBF or 0x4E00 <= code <= 0x9FFF
            or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x2FA1F)


def default_tokenization(lang: str | None) -> str:
    """Characters for languages written without spaces (Chinese, Japanese), words otherwise."""
    return "chars" if (lang or "en").split("-")[0] in ("zh", "ja") else "words"


def clean_text(text: str) -> str:
    """Normalise (NFKC), lower-case and replace punctuation and symbols by spaces.

    Letters, marks and digits of every script are kept; apostrophes and hyphens are kept
    inside words. `str.lower` (not casefold) keeps German ß.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    chars = []
    for i, char in enumerate(text):
        if _is_word_char(char) or (char in _JOINERS and 0 < i < len(text) - 1
              and _is_word_char(text[i - 1]) and _is_word_char(text[i + 1])):
            chars.append(char)
        else:
            chars.append(" ")
    return " ".join("".join(chars).split())


def tokenize(text: str, tokenization: str = "words") -> list[str]:
    """Split a caption into tokens: whitespace words, or ideographs one by one ('chars')."""
    words = clean_text(text).split()
    if tokenization == "words":
        return words
    if tokenization != "chars":
        raise ValueError(f"unknown tokenization {tokenization!r}; use one of {TOKENIZATIONS}")
    tokens: list[str] = []
    for word in words:
        run = ""
        for char in word:
            if _is_ideograph(char):
                if run:
                    tokens.append(run)
                    run = ""
                tokens.append(char)
            else:
                run += char
        if run:
            tokens.append(run)
    return tokens


def join_tokens(tokens: Iterable[str], tokenization: str = "words") -> str:
    """Inverse of tokenize: spaces between words, none between ideographs."""
    text = ""
    for token in tokens:
        if text and not (tokenization == "chars" and (_is_ideograph(text[-1]) or _is_ideograph(token[0]))):
            text += " "
        text += token
    return text


@dataclass
class Vocabulary:
    """Token ↔ id mapping with special tokens; ids 0-3 are <pad>, <start>, <end>, <unk>."""

    tokens: list[str]
    tokenization: str = "words"
    max_length: int = MAX_CAPTION_LENGTH
    lang: str = "en"
    tag_words: int = 0  # the last tokens, appended for a grounded model's tags: words no training caption wrote
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    pad_id = 0
    start_id = 1
    end_id = 2
    unk_id = 3

    def __post_init__(self) -> None:
        if tuple(self.tokens[:4]) != SPECIAL_TOKENS:
            raise ArtifactError(f"vocabulary must start with {SPECIAL_TOKENS}, got {self.tokens[:4]}")
        if not 0 <= self.tag_words <= len(self.tokens) - len(SPECIAL_TOKENS):
            raise ArtifactError(f"vocabulary has {len(self.tokens)} tokens, so not {self.tag_words} tag words")
        self._index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5, max_length: int = MAX_CAPTION_LENGTH,
              tokenization: str = "words", lang: str = "en") -> Vocabulary:
        """Keep tokens seen at least `min_count` times, most frequent first."""
        counts = Counter(t for caption in captions for t in tokenize(caption, tokenization))
        kept = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
        return cls([*SPECIAL_TOKENS, *kept], tokenization, max_length, lang)

    def __len__(self) -> int:
        return len(self.tokens)

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, self.tokenization)

    def encode(self, text: str) -> list[int]:
        """<start> ids… <end>, truncated to max_length tokens and unknown words as <unk>."""
        ids = [self._index.get(t, self.unk_id) for t in self.tokenize(text)[: self.max_length]]
        return [self.start_id, *ids, self.end_id]

    def ids(self, tokens: Iterable[str]) -> list[int]:
        """The ids of those of `tokens` that are in the vocabulary (the others are skipped)."""
        return [self._index[t] for t in tokens if t in self._index]

    def words(self, ids: Iterable[int]) -> list[str]:
        """Tokens up to the first <end>, without <pad> and <start>."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i not in (self.pad_id, self.start_id):
                out.append(self.tokens[i])
        return out

    @property
    def caption_words(self) -> frozenset[str]:
        """The tokens the training captions wrote: all but the special ones and the appended tag words."""
        return frozenset(self.tokens[len(SPECIAL_TOKENS):len(self.tokens) - self.tag_words])

    def decode(self, ids: Iterable[int]) -> str:
        return self.join(self.words(ids))

    def join(self, words: Iterable[str]) -> str:
        """Tokens as text: words with spaces, characters without (what `decode` does after `words`)."""
        return join_tokens(words, self.tokenization)

    @property
    def fingerprint(self) -> str:
        """Short hash of the token list; stored with a model to detect mismatched files."""
        blob = json.dumps([self.tokens, self.tokenization], ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"format": "captioner-vocabulary", "version": 1, "tokens": list(self.tokens),
                "tokenization": self.tokenization, "max_length": self.max_length,
                "lang": self.lang, "tag_words": self.tag_words, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: object) -> Vocabulary:
        if not isinstance(data, dict) or data.get("format") != "captioner-vocabulary":
            raise ArtifactError("not a captioner vocabulary (missing format marker); "
                                "use the tokenizer.pkl written with the model.")
        try:
            vocab = cls(list(data["tokens"]), data["tokenization"], int(data["max_length"]),
                        data.get("lang", "en"), int(data.get("tag_words", 0)))
        except (KeyError, TypeError, ValueError) as error:
            raise ArtifactError(f"vocabulary file is incomplete ({error}); re-save it.") from None
        if data.get("fingerprint") not in (None, vocab.fingerprint):
            raise ArtifactError("vocabulary fingerprint does not match its tokens; the file was altered.")
        return vocab
