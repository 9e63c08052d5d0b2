"""The score tables a model file may carry (dev scores from training or `captioner evaluate --record`), and the
names of the caption metrics they hold, which evaluation computes."""

from __future__ import annotations

#: The COCO caption metrics, in the order tables show them.
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")


def score_tables(extra: dict | None) -> dict[str, dict[str, float]]:
    """The score tables of a model's `extra` facts, e.g. {"dev greedy": {"BLEU-4": 0.21, …}}: dicts
    of numbers keyed by caption metrics."""
    return {name: {metric: float(value) for metric, value in table.items()}
            for name, table in (extra or {}).items()
            if isinstance(table, dict) and table and set(table) <= set(METRICS)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in table.values())}


def without_scores(extra: dict | None) -> dict:
    """A model's `extra` facts less its score tables: the recipe and provenance."""
    return {name: value for name, value in (extra or {}).items() if name not in score_tables(extra)}
