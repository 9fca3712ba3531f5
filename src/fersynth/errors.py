"""Errors the CLI reports as one clear message and a non-zero exit, without a traceback."""


class FersynthError(Exception):
    """A problem with the user's input or data, named precisely enough to fix."""


class ParamsError(FersynthError):
    """params.yaml has an unknown key, a wrong type or an out-of-range value."""


class DataError(FersynthError):
    """An input dataset is corrupt, incomplete or inconsistent."""


class OutputError(FersynthError):
    """An output path cannot be written: of the wrong kind, not writable, another run's, or the disk refused."""
