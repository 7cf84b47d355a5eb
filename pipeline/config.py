"""Run configuration: YAML files loaded into frozen, strict pydantic models.

One module on purpose, past 500 lines: it is the whole config schema, read top to bottom as the
reference of every key (the PII section, which has its own options language, lives in pii/config.py).

Usage::

    from pipeline.config import load_config
    cfg = load_config("configs/sample.yaml")
    print(cfg.digest())
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.dedup.index_store import is_url
from pipeline.errors import ConfigError
from pipeline.pii.config import PiiConfig


class _Strict(BaseModel):
    """Base of every config model: frozen, unknown keys forbidden."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class _SourceBase(_Strict):
    """Fields every source has, whatever its format."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    paths: tuple[str, ...] = Field(min_length=1)
    text_field: str = "text"
    id_field: str | None = None
    priority: int = 0
    license: str | None = None


class JsonlSourceConfig(_SourceBase):
    """JSON Lines files, plain, `.gz` or `.zst`."""

    kind: Literal["jsonl"]


class ParquetSourceConfig(_SourceBase):
    """Parquet files; with `image_column`, one row is one image record."""

    kind: Literal["parquet"]
    image_column: str | None = Field(default=None, min_length=1)
    """The column holding the image: raw bytes (binary) or the Hugging Face `Image` feature, a struct {bytes, path}."""


class CsvSourceConfig(_SourceBase):
    """CSV files with a header row."""

    kind: Literal["csv"]
    delimiter: str = Field(default=",", min_length=1, max_length=1)


class TextDirSourceConfig(_SourceBase):
    """Directories of text files: one file is one record."""

    kind: Literal["text_dir"]
    glob: str = "**/*.txt"
    encoding: Literal["utf-8"] = "utf-8"


class ImageDirSourceConfig(_SourceBase):
    """Directories of images (.jpg .png .gif .webp .bmp .tif): one file is one record."""

    kind: Literal["image_dir"]
    keep: Literal["bytes", "path"] = "bytes"


class WebDatasetSourceConfig(_SourceBase):
    """WebDataset `.tar` shards (also `.tar.gz`/`.tgz`/`.tar.bz2`/`.tar.xz`): one sample is one record."""

    kind: Literal["webdataset"]
    keep: Literal["bytes", "path"] = "bytes"
    image_exts: tuple[str, ...] = Field(
        default=("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"), min_length=1)

    @field_validator("id_field")
    @classmethod
    def _id_is_a_column(cls, value: str | None) -> str | None:
        if value not in (None, "key", "path"):
            raise ValueError("a webdataset record's id can only come from `key` or `path`")
        return value


class HfDiskSourceConfig(_SourceBase):
    """A Hugging Face dataset written with `Dataset.save_to_disk` (or a `DatasetDict`, with `split`)."""

    kind: Literal["hf_disk"]
    split: str | None = None
    image_column: str | None = Field(default=None, min_length=1)
    """The column holding the image: raw bytes (binary) or the Hugging Face `Image` feature, a struct {bytes, path}."""


class HfLoadSourceConfig(_SourceBase):
    """`datasets.load_dataset(builder, data_files=paths)` over local files, offline."""

    kind: Literal["hf_load"]
    builder: Literal["json", "csv", "parquet", "text"]
    split: str = "train"
    image_column: str | None = Field(default=None, min_length=1)
    """The column holding the image: raw bytes (binary) or the Hugging Face `Image` feature, a struct {bytes, path}."""


SourceConfig = Annotated[
    Union[
        JsonlSourceConfig,
        ParquetSourceConfig,
        CsvSourceConfig,
        TextDirSourceConfig,
        ImageDirSourceConfig,
        WebDatasetSourceConfig,
        HfDiskSourceConfig,
        HfLoadSourceConfig,
    ],
    Field(discriminator="kind"),
]


class NormalizeConfig(_Strict):
    """How text is normalised before its exact-duplicate key is computed."""

    unicode: Literal["none", "NFC", "NFKC"] = "NFC"
    lowercase: bool = False
    collapse_whitespace: bool = True


class ExactDedupConfig(_Strict):
    """Exact deduplication across every unit and source of the run."""

    enabled: bool = True
    normalize: NormalizeConfig = NormalizeConfig()


class NearDedupConfig(_Strict):
    """Near-duplicate detection with MinHash LSH, after exact dedup."""

    enabled: bool = True
    # Defaults measured in bench/README.md ("Near-duplicate quality"): 0.6 on the content similarity
    # (boilerplate left out) with the central survivor; the conservative option is 0.8 with the
    # longest survivor (configs/dedup-conservative.yaml).
    threshold: float = Field(default=0.6, gt=0.0, le=1.0)
    num_perm: int = Field(default=128, ge=8, le=1024)
    seed: int = Field(default=1, ge=0)
    ngram: int = Field(default=5, ge=1, le=32)
    char_ngrams: bool = False
    short_docs: Literal["whole", "skip"] = "whole"
    bands: int | None = Field(default=None, ge=1)
    rows: int | None = Field(default=None, ge=1)
    min_candidate_probability: float = Field(default=0.9, gt=0.0, lt=1.0)
    bucket_pair_limit: int = Field(default=64, ge=2)
    # How a candidate pair is verified. `signature`: on the MinHash estimate. `borderline`: on the
    # estimate, except that a pair estimated within `borderline_sigmas` standard errors of the
    # threshold is checked on the exact shingle sets of its two texts, read back at the barrier (a
    # 128-permutation estimate at 0.6 is +-0.04: pairs of distinct texts at 0.55 cross the
    # threshold, and a wrong drop can take the last copy of a document). `exact`: every pair on
    # exact shingle sets written in pass 1 (more disk and memory). bench/README.md measures them.
    verify: Literal["signature", "borderline", "exact"] = "borderline"
    borderline_sigmas: float = Field(default=3.0, gt=0.0, le=10.0)
    # One extra hop: also drop a record that is verified-similar at this bar to a record dropped
    # directly for the survivor (never further; the ledger names the record in between). Jaccard
    # distance is a metric, so such a record is still at least threshold + second_hop - 1 similar
    # to the survivor. "threshold": the same bar as the threshold; null (the default): no hop.
    # Off by default: it adds little (bench/README.md) and turns one borderline wrong drop into a
    # lost document (both copies of it dropped) where a direct drop alone loses nothing.
    second_hop: float | Literal["threshold"] | None = None
    # Boilerplate: a signature minimum found in at least max(boilerplate_min_docs,
    # boilerplate_min_share x signed records) of the run's records (a shared header, footer, notice)
    # is left out of the similarity, so two different pages of one site do not look alike and a
    # page with added boilerplate still matches its source. boilerplate_min_docs 0: off.
    boilerplate_min_docs: int = Field(default=20, ge=0)
    boilerplate_min_share: float = Field(default=1e-4, ge=0.0, le=1.0)
    # The short-document pass (dedup/short_pass.py) for records of at most this many words; 0: off.
    # On by default: on four generated 1M web corpora (three tuned on, one fresh) it removed 4.4-4.7
    # points more of the copies at precision 1.000 with no document lost (bench/README.md, issue #16).
    short_pass_max_words: int = Field(default=100, ge=0)
    short_pass_threshold: float = Field(default=0.6, gt=0.0, le=1.0)  # exact content char-5-gram Jaccard (>= threshold too)
    image_phash_distance: int = Field(default=4, ge=0, le=64)

    @model_validator(mode="after")
    def _bands_and_rows_together(self) -> "NearDedupConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both `bands` and `rows`, or neither (then they are chosen for the threshold)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        if isinstance(self.second_hop, float) and not 0.0 < self.second_hop <= 1.0:
            raise ValueError(f"second_hop = {self.second_hop} must be in (0, 1]")
        if isinstance(self.second_hop, float) and self.second_hop < self.threshold:
            raise ValueError(f"second_hop = {self.second_hop} is below threshold = {self.threshold}: set it to at least "
                             "the threshold (a higher bar for the indirect step), or leave it out")
        return self

    @property
    def hop_bar(self) -> float | None:
        """The second hop's similarity bar, or None without a second hop."""
        return self.threshold if self.second_hop == "threshold" else self.second_hop


class SurvivorConfig(_Strict):
    """Which copy of a duplicate group is kept.

    Exact duplicates: source priority (higher wins), then lowest record_id. Near duplicates:
    source priority, then the longest text (or the highest `quality_column`; or, with `central`,
    the most verified neighbours first, then the longest), then lowest record_id.
    """

    rule: Literal["priority_then_lowest_id"] = "priority_then_lowest_id"
    near_prefer: Literal["longest", "quality", "central"] = "central"
    quality_column: str | None = None

    @model_validator(mode="after")
    def _quality_needs_column(self) -> "SurvivorConfig":
        if (self.near_prefer == "quality") != (self.quality_column is not None):
            raise ValueError("`near_prefer: quality` and `quality_column` go together")
        return self


class DedupConfig(_Strict):
    """Deduplication stages."""

    exact: ExactDedupConfig = ExactDedupConfig()
    near: NearDedupConfig = NearDedupConfig()
    survivor: SurvivorConfig = SurvivorConfig()


class OutputConfig(_Strict):
    """Where and how the cleaned shards are written."""

    dir: str = "runs/latest"
    """The run directory: a path, or an fsspec URL (s3://bucket/runs/x, gs://, az://) with its backend installed."""
    local_dir: str | None = None
    """With a URL `dir`: where the run is computed and staged on this machine before it is uploaded
    (default: `$HYGIENE_CACHE_DIR/runs/<protocol>/<bucket>/<key>`, `~/.cache/hygiene` unless set)."""
    shard_max_rows: int = Field(default=100_000, ge=1)
    shard_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    row_group_rows: int = Field(default=10_000, ge=1)
    ledger_part_rows: int = Field(default=1_000_000, ge=1)
    compression: Literal["zstd"] = "zstd"
    compression_level: int = Field(default=3, ge=1, le=22)

    @property
    def local_path(self) -> str:
        """The directory the run is written into on this machine: `dir`, or its staging copy when `dir` is a URL."""
        if self.local_dir is not None:
            return self.local_dir
        if not is_url(self.dir):
            return self.dir
        from pipeline.storage import default_local_dir, is_remote, local_path_of

        return default_local_dir(self.dir) if is_remote(self.dir) else local_path_of(self.dir)


class StateConfig(_Strict):
    """Where the corpus index of published runs lives, and whether inputs already processed are skipped."""

    dir: str
    incremental: bool = True


class HashListConfig(_Strict):
    """One list of hashes of known prohibited material."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    path: str
    format: Literal["auto", "text", "csv", "jsonl"] = "auto"
    type: Literal["md5", "sha1", "sha256", "pdq", "phash", "url"] | None = None
    provider: str | None = None
    version: str | None = None
    updated: str | None = None
    max_age_days: int | None = Field(default=None, ge=0)
    max_distance: int | None = Field(default=None, ge=0, le=256)


class WaiverConfig(_Strict):
    """An explicit, recorded decision to run although a list is missing or stale."""

    list: str
    reason: str = Field(min_length=10)


class SafetyConfig(_Strict):
    """Prohibited-material matching: runs first, before anything about a record is persisted."""

    hash_lists: tuple[HashListConfig, ...] = ()
    waivers: tuple[WaiverConfig, ...] = ()
    url_field: str | None = None
    pdq_max_distance: int = Field(default=31, ge=0, le=256)
    phash_max_distance: int = Field(default=6, ge=0, le=64)
    dihedral: bool = False
    # Match images whatever happened to their EXIF orientation tag: a tagged file also on its stored
    # pixel order, an untagged one also as each tag would have shown it (issue #16).
    exif_variants: bool = True
    # Also match the picture inside a near-uniform border (a copy with a frame added).
    trim_borders: bool = True
    confirmed_list: str | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> "SafetyConfig":
        names = [h.name for h in self.hash_lists]
        if len(set(names)) != len(names):
            raise ValueError("hash list names must be unique")
        unknown = [w.list for w in self.waivers if w.list not in names]
        if unknown:
            raise ValueError(f"waivers name unknown hash lists: {unknown}")
        return self


class SigningConfig(_Strict):
    """The Ed25519 key that signs run attestations (else $HYGIENE_SIGNING_KEY; else unsigned)."""

    key: str | None = None


class LimitsConfig(_Strict):
    """Bounds on what one input may make a reader hold or decompress, so a decompression bomb or a
    runaway record is stopped in bounded memory and time instead of taking the machine."""

    # 64 MiB: over ten times the longest real documents (a long book is 1-5 MB; the largest Project
    # Gutenberg texts, dictionaries, about 30 MB), and small enough that the few copies a record
    # passes through (raw line, parsed column, normalised text) stay well inside a worker's memory.
    max_record_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    # 256 MiB: above the raw pixels of the largest image the decoder accepts (50 Mpx x 4 bytes = 200 MB).
    max_image_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    # Decompressed bytes per compressed input (.gz, .zst, .tar.gz, Parquet pages): 1 TiB is several
    # times the largest single shards of public corpora, and about half an hour of one core to inflate.
    max_decompressed_bytes: int | None = Field(default=1024**4, ge=1)
    # Real text corpora compress 3-30x (heavily duplicated ones up to about 80x with zstd --long);
    # a bomb inflates about 1000x (gzip's ceiling) or far more (zstd). Checked once a file has
    # produced more than `ratio_exempt_bytes`: small, very repetitive files are never stopped, and
    # a bomb of tiny records still adds at most about 20 million of them (13-byte JSON lines).
    max_compression_ratio: float | None = Field(default=100.0, ge=1.0)
    ratio_exempt_bytes: int = Field(default=256 * 1024 * 1024, ge=0)


class UnitConfig(_Strict):
    """How inputs are split into units of work."""

    target_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    target_rows: int = Field(default=200_000, ge=1)
    batch_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Keep the parsed batches of JSONL, CSV and text inputs between the passes (uncompressed Arrow,
    # about the size of the parsed records) so each input is parsed once. false: pass 2 reads and
    # parses the inputs again, and no extra space is needed.
    spill: bool = True
    # Where the kept batches go: "memory" is a private directory on the RAM-backed tmpfs
    # /dev/shm (writing there costs a fifth of the CPU of a disk file system's page cache),
    # "output" the run's scratch space next to the outputs, "auto" memory when /dev/shm is a
    # tmpfs with room for twice the estimate and the estimate is under a third of the available
    # memory, else output. A kept batch that is gone (a reboot before a resumed run) is read again.
    spill_to: Literal["auto", "memory", "output"] = "auto"
    # Readers receive this section, so the limits reach every reader without a new parameter.
    limits: LimitsConfig = LimitsConfig()


class RunnerConfig(_Strict):
    """Which Prefect task runner executes the units."""

    kind: Literal["thread", "dask"] = "thread"
    max_workers: int = Field(default=2, ge=1)
    dask_address: str | None = None
    dask_workers: int = Field(default=2, ge=1)
    scratch: Literal["local", "store"] = "local"
    """Where the run's scratch space (`_work/`) is shared with the workers: "local", the run
    directory's (or `output.local_dir`'s) filesystem, which workers on other machines must mount at
    the same path; "store", beside the run on its object store (`output.dir` a URL), each machine
    keeping a copy (`pipeline.run.scratch`)."""


class ErrorPolicyConfig(_Strict):
    """What to do with bad input."""

    on_file_error: Literal["fail", "reject"] = "fail"
    fail_on_reject: bool = False


class ScheduleConfig(_Strict):
    """A cron schedule for the Prefect deployment."""

    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from cronsim import CronSim, CronSimError

        try:
            CronSim(value, datetime.now(timezone.utc))
        except CronSimError as e:
            raise ValueError(f"not a valid cron expression: {value!r} ({e})") from e
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown timezone {value!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'") from e
        return value


class StageEntryConfig(_Strict):
    """One entry of `stages:`: a built-in kind (its options stay in its section), an installed
    `hygiene.stages` entry point, or your own class as `module:Class` with its options in `config`."""

    kind: str = Field(min_length=1)
    config: dict = Field(default_factory=dict)
    # The config file's folder, filled in when the file is loaded: a `module:Class` is imported from
    # there too, and relative file names in options (adult_text's `terms_file`) resolve there.
    search_path: str | None = None


class RunConfig(_Strict):
    """The whole configuration of one cleaning run."""

    version: Literal[1] = 1
    name: str = Field(default="hygiene-run", min_length=1)
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    dedup: DedupConfig = DedupConfig()
    output: OutputConfig = OutputConfig()
    units: UnitConfig = UnitConfig()
    runner: RunnerConfig = RunnerConfig()
    errors: ErrorPolicyConfig = ErrorPolicyConfig()
    schedule: ScheduleConfig | None = None
    state: StateConfig | None = None
    signing: SigningConfig = SigningConfig()
    safety: SafetyConfig = SafetyConfig()
    pii: PiiConfig | None = None
    # The run's stages in order; absent: the stages the sections above imply (safety, exact and
    # near dedup when enabled, PII when configured), as before the stage contract.
    stages: tuple[StageEntryConfig, ...] | None = None

    @model_validator(mode="after")
    def _unique_source_names(self) -> "RunConfig":
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        if self.runner.scratch == "store" and not is_url(self.output.dir):
            raise ValueError("runner.scratch: store needs an output.dir on an object store (s3://...); with a local "
                             "output.dir the scratch space is that directory's `_work/`")
        return self

    def canonical_json(self) -> str:
        """The canonical JSON of the resolved config: sorted keys, compact separators."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """sha256 of the canonical JSON."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration ({err.error_count()} problem(s)):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  - {loc}: {e['msg']}")
    lines.append("Fix the file and run again; see configs/sample.yaml for a complete example.")
    return "\n".join(lines)


def parse_config(data: object, origin: Path | str = "<config>") -> RunConfig:
    """Validate a parsed YAML/JSON document into a RunConfig, raising ConfigError."""
    path = Path(origin)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(path, e)) from e


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a YAML config file; relative source paths resolve against the file's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: config file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config file ({e.__class__.__name__})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    cfg = resolve_paths(parse_config(data, p), p.parent)
    if cfg.stages is not None:
        from pipeline.core.registry import resolve_stages

        try:
            resolve_stages(cfg)  # unknown kinds, bad options, wrong order: before any work
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from e
    return cfg


def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Make source paths and the output dir absolute, relative to `base`; `{date}` in the output dir is today (UTC)."""

    def absolute(s: str) -> str:
        if is_url(s):  # an fsspec URL (s3://...) is used as written
            return s
        q = Path(s).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    sources = tuple(s.model_copy(update={"paths": tuple(absolute(x) for x in s.paths)}) for s in cfg.sources)
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    output = cfg.output.model_copy(update={"dir": absolute(cfg.output.dir.replace("{date}", today))})
    if output.local_dir is not None or is_url(output.dir):
        from pipeline.storage import is_remote, local_path_of

        if is_url(output.dir) and not is_remote(output.dir):  # file://
            output = output.model_copy(update={"dir": absolute(local_path_of(output.dir))})
        if not is_remote(output.dir) and output.local_dir is not None:
            raise ConfigError("output.local_dir: only for an output dir on an object store (s3://, gs://, az://)")
        if output.local_dir is not None:
            output = output.model_copy(update={"local_dir": absolute(output.local_dir)})
    state = cfg.state
    if state is not None:
        state = state.model_copy(update={"dir": absolute(state.dir)})
    signing = cfg.signing.model_copy(update={"key": absolute(cfg.signing.key)}) if cfg.signing.key else cfg.signing
    lists = tuple(h.model_copy(update={"path": absolute(h.path)}) for h in cfg.safety.hash_lists)
    confirmed = absolute(cfg.safety.confirmed_list) if cfg.safety.confirmed_list else None
    if confirmed is not None and is_url(confirmed):
        raise ConfigError("safety.confirmed_list: must be a local file (runs append to it under a file lock); "
                          f"got {confirmed}")
    safety = cfg.safety.model_copy(update={"hash_lists": lists, "confirmed_list": confirmed})
    pii = cfg.pii
    if pii is not None and pii.hmac_key.file:
        pii = pii.model_copy(update={"hmac_key": pii.hmac_key.model_copy(update={"file": absolute(pii.hmac_key.file)})})
    stages = cfg.stages
    if stages is not None:
        stages = tuple(e.model_copy(update={"search_path": str(base.resolve())})
                       if (":" in e.kind or e.config) and not e.search_path else e for e in stages)
    return cfg.model_copy(update={"sources": sources, "output": output, "state": state, "signing": signing,
                                  "safety": safety, "pii": pii, "stages": stages})
