"""Evaluation: COCO caption metrics and scoring a model on a dataset split."""

#: The COCO caption metrics, in the order tables show them.
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
