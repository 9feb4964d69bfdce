"""Errors users see. Short, and each names what to change."""


class SDWidgetsError(Exception):
    """Base class for errors raised by sdwidgets."""


class ParamError(SDWidgetsError, ValueError):
    """A generation parameter is invalid. Raised before any model work."""


class ModelNotFoundError(ParamError):
    """A model alias, folder, file or hub id could not be resolved."""


class ModelLoadError(ParamError):
    """A model's files were found but could not be loaded (damaged, incomplete or not a model)."""


class UnsafeModelError(ParamError):
    """A pickled checkpoint was refused (it can run arbitrary code when loaded)."""


class OutOfMemoryError(SDWidgetsError, MemoryError):
    """The device ran out of memory; the message lists the options that would help."""


class MissingExtraError(SDWidgetsError, ImportError):
    """A feature needs an optional dependency; the message names the extra to install."""


class MissingWeightsError(SDWidgetsError, OSError):
    """Weights a feature needs are not on this machine and cannot be fetched now; says how to get them."""
class ParamWarning(UserWarning):
    """Something read from a file or another tool was adjusted or left out (the message says what)."""
