"""A trained model's files: `mymodel.h5` + `tokenizer.pkl`, and the folder `captioner export` writes.

The bottom package that training, export, the portable runtime, serving and the app all stand on:
how the files are laid out, written atomically, read back and checked before anything in them runs.
"""
