"""The one error of image import."""

from __future__ import annotations


class ImageImportError(Exception):
    """Why an image cannot be imported, phrased so the operator knows what to fix."""


class ImageDeleteError(Exception):
    """Why an image cannot be deleted (in use, unknown, another host's), phrased for the operator."""
