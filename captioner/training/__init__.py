"""Training: recipes, tf.data pipelines, cross-entropy and self-critical training, weight soups."""
