"""Data: dataset readers (captions, splits) and safe image loading."""
