"""Roundup: weekly roundups in, personalised digests out."""

__version__ = "0.1.0"
