"""How the command line turns pipeline errors into messages and exit codes, in one place.

Usage::

    with exits_on_error(config=EXIT_USAGE):
        manifest = run_local(cfg)
"""

from __future__ import annotations

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
