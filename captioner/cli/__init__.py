"""The `captioner` command line."""

from captioner.cli.main import main

__all__ = ["main"]
