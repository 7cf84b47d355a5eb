"""Error types of the pipeline: one base class, subclasses named for the problem."""

from __future__ import annotations


# Exit codes of the command line: published / failed / invalid config or usage / records rejected.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """A configuration file is missing, unreadable or invalid."""


class SourceError(PipelineError):
    """An input cannot be found or read as a whole (one bad record is a rejection, not this)."""


class PlanError(PipelineError):
    """The run plan on disk does not match the run being resumed."""


class OutputError(PipelineError):
    """The output directory cannot be written safely."""


class ManifestError(PipelineError):
    """A manifest is missing, malformed or inconsistent with the files it describes."""


class RejectionsError(PipelineError):
    """Records were rejected and the run was asked to fail on any rejection."""
