"""Errors the runner reports as one line (``error: ...``) instead of a traceback."""


class PluginError(Exception):
    """Base class: a problem the user can fix from the message alone."""


class DatasetNotFoundError(PluginError, FileNotFoundError):
    """A dataset's atomic files are missing."""


class UnknownModelError(PluginError, ValueError):
    """A model name that is neither a plugin model nor a RecBole model."""


class LLMLoadError(PluginError, OSError):
    """An LLM or text encoder path/alias that cannot be loaded."""


class ConfigValueError(PluginError, ValueError):
    """A property with a value the plugin cannot use."""
