"""How the command line turns pipeline errors into messages and exit codes, in one place.

Usage::

    with exits_on_error(config=EXIT_USAGE):
        manifest = run_local(cfg)
"""

from __future__ import annotations

import atexit
import gc
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
