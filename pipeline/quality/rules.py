"""What a quality rule reports when a document fails it: the rule, the measured value, the threshold.

    f = Failure("gopher.mean_word_length", 2.1, "<", 3)
    f.reason()       # "gopher.mean_word_length 2.1 < 3"
    f.evidence()     # {"quality_rule": "gopher.mean_word_length", "quality_value": 2.1, "quality_threshold": 3}
"""

from __future__ import annotations

from dataclasses import dataclass


def _fmt(v: float | int) -> str:
    if isinstance(v, bool) or isinstance(v, int):
        return str(int(v))
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}"


@dataclass(frozen=True)
class Failure:
    """The first rule a document fails: `value op threshold` holds (e.g. 2.1 < 3); a rule without a
    threshold (C4's "lorem ipsum" in a kept line) has `threshold` None and reads `rule op value`."""

    rule: str
    value: float | int
    op: str
    threshold: float | int | None

    def reason(self) -> str:
        """`rule value op threshold`; the value gets more digits when rounding would make it look equal."""
        if self.threshold is None:
            return f"{self.rule} {self.op} {_fmt(self.value)}"
        t = _fmt(self.threshold)
        v = _fmt(self.value)
        digits = 4
        while v == t and isinstance(self.value, float) and digits < 17:
            digits += 2
            v = f"{self.value:.{digits}g}"
        return f"{self.rule} {v} {self.op} {t}"

    def evidence(self) -> dict:
        """The ledger's evidence for the drop (the value rounded to 6 digits: decisions, not bits)."""
        value = self.value if isinstance(self.value, int) else float(f"{self.value:.6g}")
        return {"quality_rule": self.rule, "quality_value": value, "quality_threshold": self.threshold}


def enabled(threshold) -> bool:
    """datatrove's switch for a rule: a threshold of None or 0 turns the rule off (`if self.x and ...`)."""
    return bool(threshold)
