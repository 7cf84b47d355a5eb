"""Decisions and their categories: data that the ledger, conservation, verify, inspect, the report,
the dataset card and the sign-off policies read, never a hand-kept list.

Each stage declares the decisions it can make (`Stage.decisions`); the core adds the three that
belong to no stage (kept, rejected while reading, quarantined by the safety stage is the safety
stage's own). A run's `DecisionTable` is written into its manifest, so a run made with a user's
stage is audited correctly by a process that cannot import that stage.

Usage::

    table = manifest_decisions(manifest)          # pipeline.core.registry
    table.category("dropped_near_duplicate")      # Category.DROPPED
    table.names(Category.DROPPED)                 # every dropped decision of the run
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable

from pipeline.errors import PipelineError


class Category(str, Enum):
    """What a decision means for conservation: input = kept + dropped + quarantined + rejected."""

    KEPT = "kept"
    DROPPED = "dropped"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"


@dataclass(frozen=True)
class DecisionKind:
    """A decision a stage can make, its category and a one-line description for the card and report."""

    name: str
    category: Category
    description: str


KEPT = DecisionKind("kept", Category.KEPT, "kept unchanged")
REJECTED = DecisionKind("rejected", Category.REJECTED, "rejected: the record is not valid input")
CORE_DECISIONS = (KEPT, REJECTED)

# Stages that are not configurable belong to the core: reading (validation) and record identity.
READ_STAGE = "read"
IDENTITY_STAGE = "identity"
OUTPUT_STAGE = "output"


class UnknownDecisionError(PipelineError):
    """A decision name no stage of the run declared."""


class DecisionTable:
    """The decisions one run can make, in the order their stages run."""

    def __init__(self, kinds: Iterable[DecisionKind]) -> None:
        self._kinds: dict[str, DecisionKind] = {}
        for k in kinds:
            old = self._kinds.get(k.name)
            if old is not None and old.category != k.category:
                raise UnknownDecisionError(
                    f"decision '{k.name}' is declared with two categories ({old.category.value}, {k.category.value}); "
                    "give the stage's decision another name")
            self._kinds.setdefault(k.name, k)

    def __contains__(self, name: str) -> bool:
        return name in self._kinds

    def category(self, name: str) -> Category:
        """The category of a decision; UnknownDecisionError for a name no stage declared."""
        try:
            return self._kinds[name].category
        except KeyError:
            raise UnknownDecisionError(f"unknown decision '{name}'; known: {', '.join(self._kinds)}") from None

    def names(self, *categories: Category) -> tuple[str, ...]:
        """The decisions of the given categories, in declaration order."""
        return tuple(n for n, k in self._kinds.items() if k.category in categories)

    def kinds(self) -> tuple[DecisionKind, ...]:
        """Every decision, in declaration order."""
        return tuple(self._kinds.values())

    def to_json(self) -> dict:
        """{name: {category, description}} for the manifest."""
        return {n: {"category": k.category.value, "description": k.description} for n, k in self._kinds.items()}

    @classmethod
    def from_json(cls, data: dict) -> "DecisionTable":
        """Inverse of `to_json`."""
        return cls(DecisionKind(n, Category(v["category"]), v.get("description", "")) for n, v in data.items())
