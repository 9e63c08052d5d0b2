"""Evaluation: COCO caption metrics and scoring a model on a dataset split."""

from captioner.artifacts.scores import METRICS

__all__ = ["METRICS"]
