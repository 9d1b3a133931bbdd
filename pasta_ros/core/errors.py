"""Errors raised for a user's mistake: the CLI and node print the message, never a traceback."""


class PastaError(Exception):
    """Base class: the message names the problem and, where there is one, the fix."""


class CalibrationError(PastaError):
    """Calibration cannot proceed with the given image sets or settings."""


class ImageError(PastaError):
    """An input image cannot be processed as asked (e.g. ExG on a grayscale image)."""


class ModelError(PastaError):
    """A calibrated model directory is missing, corrupt, or does not match the runtime."""


# What the CLI and the node report as one ``error:`` line (CLI exit status 2) instead of a
# traceback: every error class of the package derives from PastaError; OSError covers missing
# files, permissions and a full disk.
USER_ERRORS: tuple[type[BaseException], ...] = (PastaError, OSError)
