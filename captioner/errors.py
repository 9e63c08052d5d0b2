"""User-facing errors: each message names the problem and how to fix it."""


class CaptionerError(Exception):
    """A problem the user can act on; surfaces print its message without a traceback."""


class ImageError(CaptionerError):
    """An image file that cannot be read or is unsafe to decode."""


class DataError(CaptionerError):
    """A dataset or captions file that cannot be used."""


class WeightsError(CaptionerError):
    """Backbone weights that cannot be found or loaded."""


class ArtifactError(CaptionerError):
    """A saved model or vocabulary that is missing, tampered with or mismatched."""
