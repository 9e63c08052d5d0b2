"""Features: ImageNet CNN encoders and the on-disk cache of their feature grids."""

DEFAULT_ENCODER = "efficientnet_lite2"  # sees better than MobileNetV2 and names what it sees (ImageNet tags)
DEFAULT_CACHE_DIR = "cache/features"  # where features are cached unless a recipe or command says otherwise
