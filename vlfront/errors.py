"""The project's exception types. Every error we raise on purpose is one of these.

Messages name the input (request index, file, tensor), the value, the limit
and the fix, so that a server can return them to its caller as they are.
"""


class VlfrontError(Exception):
    """Base class of every error vlfront raises on purpose."""


class ConfigError(VlfrontError, ValueError):
    """An unknown preset or an invalid configuration value."""


class WeightsError(VlfrontError, ValueError):
    """A weights file with a missing, extra, misshapen or unreadable tensor."""


class TokenizerError(VlfrontError, ValueError):
    """A tokenizer asset that is missing, corrupted or not what the spec requires."""


class BundleError(VlfrontError):
    """A bundle that is missing, tampered with, or cannot be served as asked."""


class ExportError(VlfrontError):
    """The export could not finish (parity failed, output not writable, ...)."""


class RequestError(VlfrontError, ValueError):
    """A request that cannot be turned into model inputs.

    Attributes:
        index: position of the request in its batch (None when unknown).
        reason: the message without the "request N: " prefix.
    """

    def __init__(self, message: str, index: int | None = None):
        self.index = index
        self.reason = message
        prefix = f"request {index}: " if index is not None else ""
        super().__init__(prefix + message)


class ImageError(RequestError):
    """An image that cannot be decoded safely (corrupt, too large, unsupported)."""


class FetchError(RequestError):
    """A remote image URL that the opt-in fetcher (vlfront.runtime.fetch) refused or could not download."""


class QueueFullError(VlfrontError):
    """The dynamic batcher's queue is full; retry later or raise max_queue."""


class CalibrationError(VlfrontError):
    """Calibration data or a calibrated variant that cannot be used."""


class EngineError(VlfrontError):
    """A TensorRT engine that is missing, stale or built for another GPU/version."""
