"""One log file per model of a run, with every line that reaches the console, from the first one on.

RecBole's ``init_logger`` builds a console and a file handler and installs them with ``logging.basicConfig``
without ``force``: a second call in the same process (the second model of a comparison, a backbone trained before
an A-LLMRec run) opens an empty ``log/<Model>/...log`` and leaves the lines in the first model's file. Lines
logged before the first call (property warnings, "training the backbone first") reach neither.

``model_log(config)`` installs RecBole's handlers for one model's run and, on exit, gives back the ones in place
before: a backbone trained inside an A-LLMRec run logs to ``log/SASRec/`` and A-LLMRec's lines go on in
``log/ALLMRec/``. ``early_log()`` holds the lines logged before a run knows its model (console, and a buffer that
the run's file receives first).
"""

import contextlib
import logging
import sys
from logging.handlers import BufferingHandler

from recbole.utils import init_logger


class _EarlyLines(BufferingHandler):
    """Records kept until the first model log opens (then written to its file)."""

    def shouldFlush(self, record):  # noqa: N802  (logging's name)
        return False


def _console():
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%d %b %H:%M"))
    return handler


def _ours(handler):
    """A handler this module installed (RecBole's pair from ``init_logger``, or the early ones); any other (pytest's
    caplog, an application's own) stays where it is."""
    return getattr(handler, "recbole_llm_log", False)


@contextlib.contextmanager
def early_log():
    """Console and buffer for the lines a run logs before its first model log (removed on exit)."""
    root = logging.getLogger()
    added, level = [], root.level
    if not any(_ours(h) for h in root.handlers):  # RecBole's logger opens per model: INFO lines would be dropped
        added = [_console(), _EarlyLines(capacity=10_000)]
        for handler in added:
            handler.recbole_llm_log = True
            root.addHandler(handler)
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in added:
            root.removeHandler(handler)
            handler.close()
        if added:
            root.setLevel(level)


def model_file(model=None):
    """The file of the model log open now (of ``model``, when named), or None."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and _ours(handler):
            if model in (None, getattr(handler, "model", None)):
                return handler.baseFilename
    return None


@contextlib.contextmanager
def model_log(config, write=True):
    """RecBole's logger for ``config["model"]``'s run; yields its file. ``write`` False (the other processes of a
    data-parallel run): no file, None. Already open for this model (the run opened it, then its trainer asks): the
    same file. Handlers installed by others are left in place."""
    open_now = model_file(config["model"])
    if open_now or not write:
        yield open_now
        return
    root = logging.getLogger()
    saved, level = [h for h in root.handlers if _ours(h)], root.level
    foreign = [h for h in root.handlers if not _ours(h)]
    for handler in saved + foreign:  # basicConfig installs RecBole's pair only on a root logger without handlers
        root.removeHandler(handler)
    init_logger(config)
    installed = root.handlers[:]
    for handler in installed:
        handler.recbole_llm_log = True
    for handler in foreign:
        root.addHandler(handler)
    file_handler = next(h for h in installed if isinstance(h, logging.FileHandler))
    file_handler.model = config["model"]
    for handler in saved:
        if isinstance(handler, _EarlyLines):  # lines from before any model log: they reached the console, now the file
            for record in handler.buffer:
                file_handler.handle(record)
            handler.buffer.clear()
    try:
        yield file_handler.baseFilename
    finally:
        for handler in installed:  # the first log of a process without early_log keeps its console
            if saved or isinstance(handler, logging.FileHandler):
                root.removeHandler(handler)
                handler.close()
        for handler in saved:
            root.addHandler(handler)
        if saved:
            root.setLevel(level)
