"""Serving: model files, the `captioner.load()` API, batch captioning and the app's helpers."""
