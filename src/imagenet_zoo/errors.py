"""Typed errors. Every failure a user can cause maps to one of these, never to a traceback.

The CLI turns `UsageError` into exit code 2 and every other `ImagenetZooError` into exit code 1; the
class name is what `--format json` reports as an input's `error.type`.
"""

from __future__ import annotations


class ImagenetZooError(Exception):
    """Base class of every error imagenet-zoo raises on purpose."""


class UsageError(ImagenetZooError):
    """The call itself is wrong (unknown model, bad option): exit code 2."""


class MissingExtraError(UsageError):
    """What was asked needs packages this install lacks; the message names the extra that brings them."""


def install_hint(extra: str) -> str:
    """The command that installs an extra of imagenet-zoo, as every message that names one says it."""
    return f"pip install 'imagenet-zoo[{extra}]'"


class UnknownModelError(UsageError):
    """No model is registered under this name or alias."""


class UnsupportedPrecisionError(UsageError):
    """The requested precision is not available for this engine or on this CPU."""


class ExplanationUnsupportedError(UsageError):
    """A heatmap was asked of a model, engine or precision that cannot compute one (the message says why)."""


class QuantizedModelMissingError(ImagenetZooError):
    """int8 was requested but no quantized model is cached yet (`imagenet-zoo quantize` makes one)."""


class ImageError(ImagenetZooError):
    """One input could not be turned into pixels; the rest of a batch goes on."""


class ImageNotFoundError(ImageError):
    """The path does not exist, is not a regular file, or cannot be read."""


class EmptyImageError(ImageError):
    """The file or buffer holds zero bytes."""


class UnsupportedImageError(ImageError):
    """Not an image, or a format/mode Pillow cannot decode."""


class CorruptImageError(ImageError):
    """A recognised image whose data is truncated or broken."""


class ImageTooLargeError(ImageError):
    """More pixels than the configured cap: refused before the pixels are allocated."""


class ResultsWriteError(ImagenetZooError):
    """A results file could not be written (a full disk): the message says what is safe and how to go on."""


class WeightsError(ImagenetZooError):
    """Weights could not be obtained, verified or read."""


class WeightsUnavailableError(WeightsError):
    """Weights are not cached and could not be downloaded (offline, mirror missing, HTTP error)."""


class WeightsIntegrityError(WeightsError):
    """A weights file does not match its published hash; it has been removed."""


class WeightsFormatError(WeightsError):
    """A weights file is not in the expected layout, or asks to run code we refuse to run."""


class ClusterError(ImagenetZooError):
    """`--cluster`: Ray is missing, the cluster cannot be reached, or the job failed on it."""


class PartitionWriteError(ClusterError):
    """A model actor could not write its partition (a full disk, a read-only folder)."""


class ModelTranslationError(ImagenetZooError):
    """A Keras model holds a layer or setting imagenet-zoo does not translate (the message names it)."""
