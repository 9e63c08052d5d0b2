"""Decoding: greedy, beam search and sampling, all driving the decoder contract."""
