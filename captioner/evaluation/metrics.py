"""Caption metrics: the COCO caption evaluation (BLEU-1..4, METEOR, ROUGE-L, CIDEr) via pycocoevalcap.

English text is tokenized with the official PTB tokenizer (Java), as in the COCO server. Other
languages use the project's Unicode tokenizer (characters for Chinese). METEOR 1.5 runs with
its standard English setup; for German, French, Czech and Spanish it matches exact words and
stems only (pycocoevalcap ships just the English paraphrase table), and for other languages it
is not reported. SPICE needs Stanford models downloaded at run time, so it is not offered offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from captioner.artifacts.scores import METRICS
from captioner.errors import CaptionerError
from captioner.text.vocabulary import tokenize

METEOR_LANGUAGES = {"de": "de", "fr": "fr", "cs": "cz", "es": "es"}  # our code → METEOR 1.5's


def _require_java() -> None:
    if shutil.which("java") is None:
        raise CaptionerError("METEOR and the PTB tokenizer need Java; install it, e.g. "
                             "`apt-get install default-jre-headless`, or pass --fast.")


def _ptb_tokenize(texts: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    _require_java()
    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in texts.items()})


def _meteor(lang: str):
    """pycocoevalcap's METEOR scorer, set up for the caption language (None if it has no support)."""
    from pycocoevalcap.meteor.meteor import Meteor

    _require_java()
    if lang == "en":
        return Meteor()
    if lang not in METEOR_LANGUAGES:
        return None

    class StemMeteor(Meteor):
        """METEOR for a language without a bundled paraphrase table: exact and stem matches."""

        def __init__(self):
            folder = os.path.dirname(sys.modules[Meteor.__module__].__file__)
            self.meteor_cmd = ["java", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio",
                               "-l", METEOR_LANGUAGES[lang], "-m", "exact stem", "-norm"]
            self.meteor_p = subprocess.Popen(self.meteor_cmd, cwd=folder, stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.lock = threading.Lock()

    return StemMeteor()


def scoring_note(lang: str, tokenization: str, fast: bool = False) -> str:
    """One line saying how captions in `lang` were tokenised for scoring and what METEOR ran."""
    if fast:
        return "(--fast: our tokenizer, no METEOR; omit it for the official PTB tokenization)"
    if lang == "en":
        return "Tokenised with the PTB tokenizer; METEOR 1.5 (English, with paraphrases)."
    units = "characters" if tokenization == "chars" else "words (Unicode tokenizer, not the English PTB one)"
    meteor = (f"METEOR 1.5 in its '{METEOR_LANGUAGES[lang]}' mode, exact and stem matches only"
              if lang in METEOR_LANGUAGES else f"METEOR not reported: METEOR 1.5 has no support for '{lang}'")
    return f"Scored on {units}; {meteor}."


def _unicode_tokenize(texts: Mapping[str, Sequence[str]], tokenization: str) -> dict[str, list[str]]:
    return {k: [" ".join(tokenize(c, tokenization)) for c in v] for k, v in texts.items()}


def score_captions(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str],
                   lang: str = "en", tokenization: str = "words", meteor: bool = True,
                   ptb: bool = True) -> dict[str, float]:
    """Corpus-level caption metrics for {image: [reference captions]} and {image: hypothesis}.

    `ptb=False` skips the Java PTB tokenizer (our Unicode tokenizer instead) and `meteor=False`
    skips METEOR: both are for quick, Java-free scores such as per-epoch model selection.
    """
    keys = [k for k in hypotheses if k in references]
    if not keys:
        raise CaptionerError("no captions to score: hypotheses and references share no images.")
    refs = {k: list(references[k]) for k in keys}
    hyps = {k: [hypotheses[k]] for k in keys}
    english = lang == "en"
    if english and ptb:
        refs, hyps = _ptb_tokenize(refs), _ptb_tokenize(hyps)
    else:
        refs, hyps = _unicode_tokenize(refs, tokenization), _unicode_tokenize(hyps, tokenization)
    # An empty hypothesis would crash the scorers; score it as a single unknown word.
    hyps = {k: [v[0] or "<empty>"] for k, v in hyps.items()}
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    scores.update({f"BLEU-{n}": float(b) for n, b in enumerate(bleu, start=1)})
    scorer = _meteor(lang) if meteor else None
    if scorer is not None:
        scores["METEOR"] = float(scorer.compute_score(refs, hyps)[0])
    scores["ROUGE-L"] = float(Rouge().compute_score(refs, hyps)[0])
    scores["CIDEr"] = float(Cider().compute_score(refs, hyps)[0])
    return scores


def format_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table: one row per decoding setting, one column per metric."""
    columns = [m for m in METRICS if any(m in r for r in rows.values())]
    width = max([len(name) for name in rows] + [8])
    lines = ["".ljust(width) + "".join(c.rjust(9) for c in columns)]
    for name, row in rows.items():
        lines.append(name.ljust(width) + "".join(
            (f"{row[c]:.4f}" if c in row else "-").rjust(9) for c in columns))
    return "\n".join(lines)
