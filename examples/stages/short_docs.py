"""A user's own filter: drop records with fewer than `min_words` words, with its own reason."""

from pydantic import BaseModel, ConfigDict

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import RecordStage, Verdicts

DROPPED_SHORT = DecisionKind("dropped_short", Category.DROPPED, "fewer words than the configured minimum")


class ShortDocsFilter(RecordStage):
    """Runs per record in pass 1, after the safety stage."""

    kind = "short_docs"
    description = "drops records with fewer than min_words words"
    decisions = (DROPPED_SHORT,)

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        min_words: int = 8

    def process(self, table, ctx):
        if ctx.text_field is None:          # image records: nothing to count
            return Verdicts.keep_all(table.num_rows)
        limit = self.config.min_words
        words = [len((t or "").split()) for t in table[ctx.text_field].to_pylist()]
        return Verdicts.from_rows([
            (DROPPED_SHORT.name, f"{n} words < min_words {limit}", {"words": n, "min_words": limit}) if n < limit else None
            for n in words
        ])
