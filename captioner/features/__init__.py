"""Features: ImageNet CNN encoders and the on-disk cache of their feature grids."""

DEFAULT_ENCODER = "mobilenet_v2"  # the backbone of the shipped models
DEFAULT_CACHE_DIR = "cache/features"  # where features are cached unless a recipe or command says otherwise
