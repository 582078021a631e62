"""User-facing errors.

Anything the user can fix (a config key, a data file, a model path) raises a subclass of
`FdaptError` with one clear message naming the key, file or line. The CLI prints that message
and exits with code 2, without a traceback. Anything else is a bug and keeps its traceback.
"""


class FdaptError(Exception):
    """An error the user can fix; its message is shown as it is."""


class ConfigError(FdaptError):
    """A config key is unknown, has the wrong type, is out of range, or contradicts another."""


class DataError(FdaptError):
    """A corpus, manifest or task file is missing or malformed, or a partition is impossible."""


class ModelError(FdaptError):
    """A model or tokenizer cannot be built or loaded from what the config names."""
