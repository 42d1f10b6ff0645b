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

from recbole_llmplugin.trainer.distributed import is_main


class _EarlyLines(BufferingHandler):
    """Records kept until the first model log opens (then written to its file)."""

    def shouldFlush(self, record):  # noqa: N802  (logging's name)
        return False


def _console():
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%d %b %H:%M"))
    return handler


@contextlib.contextmanager
def early_log():
    """Console and buffer for the lines a run logs before its first model log (restored on exit)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    if not saved:  # nothing installed yet (RecBole's logger opens per model): INFO lines would be dropped
        root.addHandler(_console())
        root.addHandler(_EarlyLines(capacity=10_000))
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        _replace(root, saved, level)


def _replace(root, handlers, level):
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def model_file(model=None):
    """The file of the model log open now (of ``model``, when named), or None."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and model in (None, getattr(handler, "model", None)):
            return handler.baseFilename
    return None


@contextlib.contextmanager
def model_log(config):
    """RecBole's logger for ``config["model"]``'s run; yields its file (None in the other processes of a data-parallel
    run, which write none). Already open for this model (the run opened it, then its trainer asks): the same file."""
    open_now = model_file(config["model"])
    if open_now or not is_main():
        yield open_now
        return
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    early = [h for h in saved if isinstance(h, _EarlyLines)]
    for handler in saved:
        root.removeHandler(handler)
    init_logger(config)
    file_handler = next(h for h in root.handlers if isinstance(h, logging.FileHandler))
    file_handler.model = config["model"]
    for handler in early:  # lines from before any model log: they reached the console, now the file too
        for record in handler.buffer:
            file_handler.handle(record)
        handler.buffer.clear()
    try:
        yield file_handler.baseFilename
    finally:
        if saved:
            _replace(root, saved, level)
        else:  # the first log of the process: its console stays, its file closes
            for handler in root.handlers[:]:
                if isinstance(handler, logging.FileHandler):
                    root.removeHandler(handler)
                    handler.close()
