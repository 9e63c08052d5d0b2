"""Text: cleaning, tokenising (words or characters) and the vocabulary."""
