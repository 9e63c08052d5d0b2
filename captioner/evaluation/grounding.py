"""Grounding measures of English captions against their references: invented objects (CHAIR_s / CHAIR_i,
Rohrbach et al. 2018) and how well held-out concepts are named (F1, the DCC protocol of Hendricks et al. 2016).

Objects and their synonyms come from captioner/text/objects.tsv; docs/grounding.md says which words count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from captioner.text.objects import mentioned_objects, parse_concepts


def _reference_objects(references: Sequence[str]) -> set[str]:
    """The objects any of an image's reference captions names."""
    return set().union(*(mentioned_objects(ref) for ref in references))


def hallucination(captions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """CHAIR_s (share of captions naming an object no reference names) and CHAIR_i (share of the objects captions
    name, each counted once per caption, that no reference names), with the counts behind them."""
    invented_captions = mentioned = invented = 0
    for image, caption in captions.items():
        named = mentioned_objects(caption)
        extra = named - _reference_objects(references[image])
        mentioned += len(named)
        invented += len(extra)
        invented_captions += bool(extra)
    return {"CHAIR_s": invented_captions / len(captions) if captions else 0.0,
            "CHAIR_i": invented / mentioned if mentioned else 0.0,
            "captions": len(captions), "objects named": mentioned, "objects invented": invented}


def concept_f1(captions: Mapping[str, str], references: Mapping[str, Sequence[str]],
               concepts: str | Sequence[str]) -> dict[str, float]:
    """F1 of naming each concept: an image is positive when any reference names it, predicted positive when its
    caption does (synonyms and plurals count); plus "mean", their average."""
    scores = {}
    for concept in parse_concepts(concepts):
        true = {image for image in captions if concept in _reference_objects(references[image])}
        said = {image for image, caption in captions.items() if concept in mentioned_objects(caption)}
        hits = len(true & said)
        scores[concept] = 2 * hits / (len(true) + len(said)) if true or said else 0.0
    if scores:
        scores["mean"] = sum(scores.values()) / len(scores)
    return scores


def grounding_report(captions: Mapping[str, Mapping[str, str]], references: Mapping[str, Sequence[str]],
                     held_out: str | Sequence[str] | None = None) -> str:
    """Plain-text tables, one row per decoding (name → {image: caption}): CHAIR_s / CHAIR_i, and the F1 of each
    held-out concept when the model was trained without them."""
    rows = {name: hallucination(by_image, references) for name, by_image in captions.items()}
    width = max([len(name) for name in rows] + [8])
    lines = ["".ljust(width) + "CHAIR_s".rjust(10) + "CHAIR_i".rjust(10) + "   (invented objects; docs/grounding.md)"]
    lines += [name.ljust(width) + f"{row['CHAIR_s']:10.3f}{row['CHAIR_i']:10.3f}"
              + f"   {row['objects invented']} of {row['objects named']} objects named" for name, row in rows.items()]
    concepts = parse_concepts(held_out)
    if concepts:
        f1 = {name: concept_f1(by_image, references, concepts) for name, by_image in captions.items()}
        columns = [*concepts, "mean"]
        lines.append("held-out F1".ljust(width) + "".join(c.rjust(12) for c in columns))
        lines += [name.ljust(width) + "".join(f"{row[c]:12.3f}" for c in columns) for name, row in f1.items()]
    return "\n".join(lines)
