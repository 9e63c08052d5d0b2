"""The portable runtime: caption from an exported folder (`captioner export`) with ONNX Runtime or LiteRT,
NumPy and Pillow only. Importing it, or `captioner.load(folder)`, never imports TensorFlow or Keras."""
