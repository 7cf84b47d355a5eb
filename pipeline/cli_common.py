"""How the command line turns pipeline errors into messages and exit codes, in one place.

Usage::

    with exits_on_error(config=EXIT_USAGE):
        manifest = run_local(cfg)
"""

from __future__ import annotations

import atexit
import errno
import gc
import os
import re
import sys
from contextlib import contextmanager
from typing import Iterator

import click

from pipeline.errors import EXIT_FAILED, ConfigError, PipelineError, RejectionsError


@contextmanager
def exits_on_error(failed: int = EXIT_FAILED, *, config: int | None = None, rejected: int | None = None,
                   prefix: str = "error") -> Iterator[None]:
    """Print a pipeline error on stderr and exit: `config` for a ConfigError and `rejected` for a
    RejectionsError when given, else `failed`."""
    try:
        yield
    except ConfigError as e:
        click.echo(f"{prefix}: {e}", err=True)
        sys.exit(failed if config is None else config)
    except RejectionsError as e:
        click.echo(f"rejected: {e}" if rejected is not None else f"{prefix}: {e}", err=True)
        sys.exit(failed if rejected is None else rejected)
    except PipelineError as e:
        click.echo(f"{prefix}: {e}", err=True)
        sys.exit(failed)


# What a file system says when it refuses a write: full, over quota, over a file-size limit, read-only.
REFUSED_WRITES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _refusal(e: BaseException) -> int | None:
    """The errno of a refused write, from an OSError or from a library's message (polars says
    "(os error 28)"); None for anything else."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None and (m := re.search(r"\b(?:os error|errno) (\d+)", str(e), re.I)):
        code = int(m.group(1))
    return code if code in REFUSED_WRITES else None


@contextmanager
def refused_writes_explained(output_dir: str) -> Iterator[None]:
    """A write the file system refused ends the command with one message saying where the run
    writes and what to do (exit 1), not a traceback: the manifest is written last, so nothing was
    published, and the same command resumes from the scratch space once there is room."""
    try:
        yield
    except Exception as e:
        code = _refusal(e)
        if code is None:
            raise
        from pipeline.spill import memory_spill_base

        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        click.echo(f"error: the file system refused a write{where}: {os.strerror(code)}. The run writes under "
                   f"{output_dir} (its _work/ scratch included) and may spill batches to {memory_spill_base()}; free "
                   "space there (or lift the quota or file-size limit), then run the same command again: it resumes "
                   "where it stopped. Nothing was published.", err=True)
        sys.exit(EXIT_FAILED)


def fast_exit() -> None:
    """Spare the process the interpreter's last garbage collections when it exits.

    They walk every object the imported libraries made (Prefect's models and clients above all):
    1-2.5 s of every `hygiene run` here, more than the work on a small input. `gc.freeze()` as the
    last exit handler (registered first, so run after Prefect's and logging's own flushes) moves
    those objects out of the collector's way. What a command writes is closed and renamed before
    it returns, and Python never promised finalizers of objects still alive at exit.
    """
    atexit.unregister(gc.freeze)  # once per process, however often `main` is invoked (tests)
    atexit.register(gc.freeze)
