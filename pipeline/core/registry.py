"""Which stages exist and which ones a run uses, in what order.

Built-in stages are listed here by kind; a user's stage is a class named `module:Class` in the
config's `stages:` list (importable from the config's folder or the environment) or published
by an installed package under the `hygiene.stages` entry-point group.

Usage::

    specs = run_stages(cfg)            # the run's stages, in order, with their validated configs
    table = decision_table(cfg)        # every decision the run can make
    describe_available()               # for `hygiene stages`
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.core.decisions import CORE_DECISIONS, DecisionTable
from pipeline.core.stage import PLACEMENT_TEXT, Placement, Stage
from pipeline.errors import ConfigError

ENTRY_POINT_GROUP = "hygiene.stages"
BUILTIN = {
    "safety": "pipeline.stages.safety:SafetyStage",
    "exact_dedup": "pipeline.stages.exact:ExactDedupStage",
    "near_dedup": "pipeline.stages.near:NearDedupStage",
    "pii": "pipeline.stages.pii:PiiStage",
    "ai_provenance": "pipeline.stages.provenance:AiProvenanceStage",
    "adult_image": "pipeline.stages.adult:AdultImageStage",
    "adult_text": "pipeline.stages.adult:AdultTextStage",
    "language": "pipeline.stages.language:LanguageStage",
    "gopher_quality": "pipeline.stages.quality:GopherQualityStage",
    "gopher_repetition": "pipeline.stages.quality:GopherRepetitionStage",
    "c4_quality": "pipeline.stages.quality:C4QualityStage",
    "fineweb_quality": "pipeline.stages.quality:FineWebQualityStage",
    "decontaminate": "pipeline.stages.decontaminate:DecontaminateStage",
    "paragraph_dedup": "pipeline.stages.paragraph_dedup:ParagraphDedupStage",
    "containment": "pipeline.stages.containment:ContainmentStage",
}
_ORDER = {Placement.RECORD: 0, Placement.BARRIER: 1, Placement.UNIT: 2, Placement.WRITE: 3}


@dataclass(frozen=True)
class StageSpec:
    """One stage of a run: its class, its validated config and where it was found."""

    kind: str
    cls: type[Stage]
    config: BaseModel
    origin: str

    @property
    def placement(self) -> Placement:
        """Where the stage decides (its first placement)."""
        return self.cls.placements[0]

    def build(self, run_config: Any) -> Stage:
        """A new (not yet set-up) instance."""
        return self.cls(self.config, run_config)


def _import(target: str, search_path: str | None = None) -> type[Stage]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"stage '{target}': name a class as `module:Class`")
    added = False
    if search_path and search_path not in sys.path:
        sys.path.insert(0, search_path)
        added = True
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        where = f" (searched the config's folder {search_path} and the environment)" if search_path else ""
        raise ConfigError(f"stage '{target}': cannot import module '{module_name}'{where}: {e}") from e
    finally:
        if added:
            sys.path.remove(search_path)
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise ConfigError(f"stage '{target}': {attr} is not a subclass of pipeline.core.stage.Stage")
    if not cls.kind or not cls.placements:
        raise ConfigError(f"stage '{target}': set the class attributes `kind` and `placements`")
    return cls


@lru_cache(maxsize=None)
def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def refresh_entry_points() -> None:
    """Look for `hygiene.stages` entry points again (after installing a package in this process)."""
    _entry_points.cache_clear()


def stage_class(kind: str, search_path: str | None = None) -> tuple[type[Stage], str]:
    """(class, origin) for a built-in kind, an entry-point name or `module:Class`."""
    if kind in BUILTIN:
        return _import(BUILTIN[kind]), "built-in"
    if ":" in kind:
        return _import(kind, search_path), "module"
    eps = _entry_points()
    if kind in eps:
        return _import(eps[kind]), f"entry point ({ENTRY_POINT_GROUP})"
    known = ", ".join([*BUILTIN, *eps])
    raise ConfigError(f"unknown stage kind '{kind}'; built-in and installed: {known}; "
                      "or name your own class as `module:Class`")


def _section(cfg, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _default_kinds(cfg) -> list[str]:
    """The stages an existing config implies, in the historic order."""
    kinds = ["safety"]
    if cfg.dedup.exact.enabled:
        kinds.append("exact_dedup")
    if cfg.dedup.near.enabled:
        kinds.append("near_dedup")
    if cfg.pii is not None and cfg.pii.enabled:
        kinds.append("pii")
    return kinds


def _validated(cls: type[Stage], kind: str, options: dict) -> BaseModel:
    try:
        return cls.Config.model_validate(options)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"stage '{kind}': invalid config: {problems}") from e


def resolve_stages(cfg) -> tuple[StageSpec, ...]:
    """The run's stages in order, each with its validated config; ConfigError naming the stage."""
    if cfg.stages is None:
        entries = [(k, {}, None) for k in _default_kinds(cfg)]
    else:
        entries = [(e.kind, dict(e.config), e.search_path) for e in cfg.stages]
        if "safety" not in [k for k, _, _ in entries]:
            entries.insert(0, ("safety", {}, None))  # prohibited-material matching always runs first
    specs: list[StageSpec] = []
    for kind, options, search in entries:
        cls, origin = stage_class(kind, search)
        if cls.config_section is not None:
            if options:
                raise ConfigError(f"stage '{kind}': its options live in the `{cls.config_section}` section, "
                                  "not under `config:`")
            section = _section(cfg, cls.config_section)
            if section is None or getattr(section, "enabled", True) is False:
                raise ConfigError(f"stage '{kind}' is listed in `stages` but `{cls.config_section}` is absent or "
                                  "disabled; configure the section or remove the stage")
            config = section
        else:
            config = _validated(cls, kind, options)
        specs.append(StageSpec(cls.kind, cls, config, origin))
    kinds = [s.kind for s in specs]
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:
        raise ConfigError(f"stages listed twice: {', '.join(repeated)}")
    if specs[0].kind != "safety":
        raise ConfigError("the safety stage must come first: prohibited material is matched before any other stage")
    order = [_ORDER[s.placement] for s in specs]
    if order != sorted(order):
        raise ConfigError("stages run by placement: list per-record stages first, then barrier stages, then "
                          "per-unit stages; got " + ", ".join(f"{s.kind} ({s.placement.value})" for s in specs))
    reserved = {"read", "identity", "output"}
    clash = reserved & set(kinds)
    if clash:
        raise ConfigError(f"stage kind(s) {', '.join(sorted(clash))} are reserved by the core")
    return tuple(specs)


_RESOLVED: dict[str, tuple[StageSpec, ...]] = {}


def run_stages(cfg) -> tuple[StageSpec, ...]:
    """`resolve_stages`, kept per config digest (a config is immutable; resolving imports modules)."""
    key = cfg.digest()
    if key not in _RESOLVED:
        _RESOLVED[key] = resolve_stages(cfg)
    return _RESOLVED[key]


def stages_at(cfg, placement: Placement) -> list[StageSpec]:
    """The run's stages that run at `placement`, in order."""
    return [s for s in run_stages(cfg) if placement in s.cls.placements]


def decision_table(cfg) -> DecisionTable:
    """Every decision the run can make: the core's and its stages'."""
    return DecisionTable([*CORE_DECISIONS, *[d for s in run_stages(cfg) for d in s.cls.decisions]])


def builtin_decisions() -> DecisionTable:
    """Every decision of the core and the built-in stages (for runs recorded before the contract)."""
    return DecisionTable([*CORE_DECISIONS, *[d for k in BUILTIN for d in stage_class(k)[0].decisions]])


def manifest_decisions(manifest: dict) -> DecisionTable:
    """The decision table a manifest records; manifests written before the stage contract get the built-in one."""
    recorded = (manifest.get("pipeline") or {}).get("decisions")
    return DecisionTable.from_json(recorded) if recorded else builtin_decisions()


def describe_stage(cls: type[Stage], origin: str) -> dict:
    """A JSON description of a stage class: where it runs, its decisions and config keys."""
    keys = {}
    if cls.config_section is None:
        for name, f in cls.Config.model_fields.items():
            keys[name] = {"type": getattr(f.annotation, "__name__", str(f.annotation)),
                          "default": None if f.is_required() else f.get_default(call_default_factory=True)}
    return {
        "kind": cls.kind, "origin": origin, "description": cls.description,
        "placements": [p.value for p in cls.placements],
        "runs": "; ".join(PLACEMENT_TEXT[p] for p in cls.placements),
        "decisions": {d.name: {"category": d.category.value, "description": d.description} for d in cls.decisions},
        "config": {"section": cls.config_section} if cls.config_section else {"keys": keys},
    }


def describe_run(cfg) -> list[dict]:
    """The manifest's description of the run's stages, in order."""
    return [{**describe_stage(s.cls, s.origin), "kind": s.kind} for s in run_stages(cfg)]


def describe_available(cfg=None) -> list[dict]:
    """Every built-in and installed stage, plus the stages a config names."""
    out = [describe_stage(stage_class(k)[0], "built-in") for k in BUILTIN]
    for name in sorted(_entry_points()):
        if name not in BUILTIN:
            try:
                out.append(describe_stage(stage_class(name)[0], f"entry point ({ENTRY_POINT_GROUP})"))
            except ConfigError as e:
                out.append({"kind": name, "origin": "entry point", "error": str(e)})
    if cfg is not None:
        seen = {d["kind"] for d in out}
        out += [describe_stage(s.cls, s.origin) for s in run_stages(cfg) if s.kind not in seen]
    return out
