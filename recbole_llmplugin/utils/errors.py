"""Errors the runner reports as one line (``error: ...``) instead of a traceback."""

import functools
import sys


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


class DiskFullError(PluginError, OSError):
    """A file could not be written: its disk is full (nothing half-written is left behind)."""


class UnreadableFileError(ConfigValueError):
    """A file that exists but cannot be read as what it should be (truncated, another format); ``reason`` says
    why, in a few words, for callers that move their own cache files aside instead."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


def one_line_errors(main):
    """A command's ``main(argv)``: a ``PluginError`` ends as one line on stderr (``error: ...``) and exit code 2, as in
    ``run_recbole_llm.py``; its return value is the exit code."""

    @functools.wraps(main)
    def command(argv=None):
        try:
            return main(argv) or 0
        except PluginError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return command
