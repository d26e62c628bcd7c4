"""Logging for workflow jobs: everything to the rule's log file, errors also to stderr."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def logged(path: str | os.PathLike) -> Iterator[logging.Logger]:
    """Send the package's log records to ``path``; log an exception before it propagates.

    The exception still reaches Snakemake (and the terminal), so the named error a user needs
    appears both in the job's log and in the run's output.
    """
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logger = logging.getLogger("cellstrata")
    logger.info("python %s", sys.version.split()[0])
    try:
        yield logger
    except Exception:
        logger.exception("job failed")
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
