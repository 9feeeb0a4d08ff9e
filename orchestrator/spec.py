"""The job file: a pydantic model validated before anything starts.

The job file is the project's external boundary, so it is pydantic with unknown
keys forbidden; every check that can be made from the file alone is made here,
so that a bad file is refused before Ray starts or the catalog is touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainer.files import resolve_files
from trainer.tokenizer import BYTE_VOCAB_SIZE

if TYPE_CHECKING:
    from trainer.model import ModelArgs

JOB_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    """Llama-3-style dense transformer dimensions."""

    dim: int = Field(256, ge=8)
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    n_kv_heads: int | None = Field(None, ge=1)
    vocab_size: int = Field(BYTE_VOCAB_SIZE, ge=BYTE_VOCAB_SIZE)
    ffn_dim_multiplier: float = Field(1.3, gt=0)
    multiple_of: int = Field(32, ge=1)
    norm_eps: float = Field(1e-5, gt=0)
    rope_theta: float = Field(500000.0, gt=0)
    max_seq_len: int = Field(2048, ge=2)
    init_from: str | None = None
    """A Hugging Face Llama folder (config.json + safetensors) a fresh job starts from.

    Read only when the job has no committed checkpoint yet; its shapes must match this section."""

    def model_args(self) -> ModelArgs:
        """The trainer's dimensions for this section (imports torch)."""
        from trainer.model import ModelArgs

        return ModelArgs(**self.model_dump(exclude={"init_from"}))

    @model_validator(mode="after")
    def _heads(self) -> ModelSpec:
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head dim dim/n_heads ({self.dim // self.n_heads}) must be even for RoPE")
        kv = self.n_kv_heads or self.n_heads
        if self.n_heads % kv:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({kv})")
        return self


class ParallelismSpec(_Section):
    """Degrees of the four parallel dimensions; world size is their product."""

    dp: int = Field(1, ge=1)
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    cp: int = Field(1, ge=1)
    microbatches: int | None = Field(None, ge=1)
    schedule: Literal["gpipe", "1f1b", "interleaved_1f1b"] = "1f1b"
    stages_per_rank: int = Field(1, ge=1)

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @model_validator(mode="after")
    def _schedule(self) -> ParallelismSpec:
        if self.schedule == "interleaved_1f1b" and self.stages_per_rank < 2:
            raise ValueError("schedule interleaved_1f1b needs stages_per_rank >= 2")
        if self.schedule != "interleaved_1f1b" and self.stages_per_rank != 1:
            raise ValueError(f"stages_per_rank > 1 needs schedule interleaved_1f1b, not {self.schedule}")
        return self


class LRSpec(_Section):
    """Linear warmup then cosine decay to min_lr."""

    peak: float = Field(3e-3, gt=0)
    min_lr: float = Field(3e-4, ge=0)
    warmup_steps: int = Field(10, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"


class TrainingSpec(_Section):
    steps: int = Field(..., ge=1)
    seed: int = 0
    global_batch_size: int = Field(8, ge=1)
    micro_batch_size: int = Field(2, ge=1)
    seq_len: int = Field(128, ge=2)
    lr: LRSpec = LRSpec()
    weight_decay: float = Field(0.1, ge=0)
    grad_clip_norm: float = Field(1.0, gt=0)
    dtype: Literal["float32", "bfloat16"] = "float32"


class DataSpec(_Section):
    """Byte-level text: every file matched is one document."""

    paths: list[str] = Field(..., min_length=1)
    max_bytes: int = Field(8 * 1024 * 1024, ge=1024)

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class CheckpointSpec(_Section):
    folder: str | None = None
    """Parent of per-job folders: a job's checkpoints live in `<folder>/<job name>/` (see `job_checkpoint_dir`)."""
    interval_steps: int | Literal["auto"] = 50
    """Steps between saves, or `auto`: chosen at each (re)start from the failures seen and a save's cost."""
    async_: bool = Field(True, alias="async")
    keep_last: int = Field(3, ge=1)
    auto_initial_steps: int = Field(50, ge=1)
    """With `interval_steps: auto`, the interval before anything has been measured."""
    auto_min_steps: int = Field(5, ge=1)
    auto_max_steps: int = Field(1000, ge=1)
    auto_prior_mtbf_s: float = Field(86_400.0, gt=0)
    """The failure interval assumed until the job's first failure (then the failures seen decide alone)."""
    snapshot_interval_steps: int = Field(10, ge=0)
    """Every this many steps each rank keeps its shard of the state in its host's memory (/dev/shm), so
    that a restart under the same layout loses at most this many steps (0: off). Never replaces checkpoints.
    10: a snapshot measured ~0.44 of a step (bench/snapshot_cost.py), and Young's √(2·MTBF·cost) with a fault
    every ~150 steps gives ~11."""

    @field_validator("interval_steps")
    @classmethod
    def _interval(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be a number of steps >= 1, or auto")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> CheckpointSpec:
        if self.auto_min_steps > self.auto_max_steps:
            raise ValueError(f"auto_min_steps ({self.auto_min_steps}) is above auto_max_steps "
                             f"({self.auto_max_steps})")
        return self

    @property
    def auto(self) -> bool:
        return self.interval_steps == "auto"


class ReliabilitySpec(_Section):
    hang_timeout_s: float = Field(60.0, gt=0)
    collective_timeout_s: float | None = Field(None, gt=0)
    max_restarts: int = Field(10, ge=0)
    """Unexpected interruptions allowed within `restart_window_s` (a rate: a long job never runs out)."""
    restart_window_s: float = Field(86_400.0, gt=0)
    crash_loop_attempts: int = Field(3, ge=1)
    """Consecutive failed attempts that commit no new checkpoint before the job is failed as a crash loop."""
    capacity_wait_s: float = Field(0.0, ge=0)
    """How long a restart waits for hosts to come back (a node rejoining, a repaired host uncordoned) when the
    gang does not fit, before the attempt fails as placement_failed (0, the default: at once). Off by default
    until a spare-swap run that once sat out a whole 300-s wait instead of taking its held spare is understood."""
    spares: int = Field(0, ge=0)
    """Hosts held aside (each reserving one host's share of the ranks), swapped in for a cordoned host."""
    allow_shrink_dp: bool = False
    warm_standby: bool = True
    """Keep one pre-imported trainer process per rank so a restart skips interpreter start-up."""
    preflight: bool = True
    """Probe every candidate host and run a short collective before every start and restart."""
    preflight_collective: bool = True
    """Include the all-reduce (and, on GPUs, the matmul burn-in) in the preflight."""
    preflight_timeout_s: float = Field(60.0, gt=0)
    preflight_max_age_s: float = Field(600.0, ge=0)
    """A restart onto hosts that all passed a preflight within this many seconds, after a failure that named none
    of them as faulty hardware, skips the preflight (0: every start is preflighted)."""
    sdc_check_interval_steps: int = Field(0, ge=0)
    """Every this many steps data-parallel replicas compare a checksum of the same computation (0: off)."""
    loss_spike_factor: float = Field(0.0, ge=0)
    """A loss above this multiple of its recent median is rolled back like a NaN one (0: only NaN/inf)."""

    @property
    def effective_collective_timeout_s(self) -> float:
        """Gloo/NCCL timeout: a backstop well past the agent's hang limit."""
        return self.collective_timeout_s or max(30.0, 2.0 * self.hang_timeout_s)


class ResourcesSpec(_Section):
    cpus_per_rank: float = Field(1.0, gt=0)
    gpus_per_rank: float = Field(0.0, ge=0)
    nodes: int | None = Field(None, ge=1)
    ranks_per_node: int | None = Field(None, ge=1)
    placement: Literal["pack", "spread"] = "pack"
    network_interface: str | None = None
    """The interface ranks communicate over (gloo and NCCL); default: the one holding the Ray node's address."""


class MetricsSpec(_Section):
    """The controller's Prometheus exporter: where /metrics is served and what the dashboard compares to."""

    host: str = "127.0.0.1"
    """Loopback by default; 0.0.0.0 to let a Prometheus on another machine scrape it."""
    port: int = Field(0, ge=0, le=65535)
    """0 picks any free port (the URL is recorded in the catalog, see `status JOB --json`)."""
    ettr_target: float = Field(0.9, gt=0, le=1)
    top_ranks: int = Field(16, ge=0)
    """Per-rank series are kept only for this many slowest ranks; every host gets an aggregate."""


class JobSpec(_Section):
    name: str
    model: ModelSpec = ModelSpec()
    parallelism: ParallelismSpec = ParallelismSpec()
    training: TrainingSpec
    data: DataSpec
    checkpoint: CheckpointSpec = CheckpointSpec()
    reliability: ReliabilitySpec = ReliabilitySpec()
    resources: ResourcesSpec = ResourcesSpec()
    metrics: MetricsSpec = MetricsSpec()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not JOB_NAME_RE.match(v):
            raise ValueError("must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'")
        return v

    @property
    def world_size(self) -> int:
        return self.parallelism.world_size

    @model_validator(mode="after")
    def _cross_checks(self) -> JobSpec:
        for msg in cross_section_errors(self):
            raise ValueError(msg)
        return self


def job_checkpoint_dir(spec: JobSpec, run_dir: str | os.PathLike[str]) -> Path:
    """The job's own checkpoint folder: `<checkpoint.folder>/<job>`, else `<run dir>/checkpoints`.

    Jobs that name the same `checkpoint.folder` never resume from, prune or delete each other's checkpoints.
    """
    if spec.checkpoint.folder:
        return Path(spec.checkpoint.folder) / spec.name
    return Path(run_dir) / "checkpoints"


def cross_section_errors(spec: JobSpec) -> list[str]:
    """Constraints that tie sections together (layout vs model, batch, resources)."""
    p, m, t, r = spec.parallelism, spec.model, spec.training, spec.resources
    errs: list[str] = []
    kv = m.n_kv_heads or m.n_heads
    if m.n_heads % p.tp:
        errs.append(f"parallelism.tp: n_heads ({m.n_heads}) must be divisible by tp ({p.tp})")
    elif kv % p.tp:
        errs.append(f"parallelism.tp: n_kv_heads ({kv}) must be divisible by tp ({p.tp}); "
                    "each tensor-parallel rank holds whole key/value heads")
    if t.seq_len % (2 * p.cp):
        errs.append(f"training.seq_len: {t.seq_len} must be divisible by 2*cp ({2 * p.cp})")
    if t.seq_len > m.max_seq_len:
        errs.append(f"training.seq_len: {t.seq_len} exceeds model.max_seq_len ({m.max_seq_len})")
    n_stages = p.pp * p.stages_per_rank
    if m.n_layers < n_stages:
        errs.append(f"parallelism.pp: {n_stages} pipeline stages need n_layers >= {n_stages}, got {m.n_layers}")
    per_dp = t.global_batch_size // p.dp if t.global_batch_size % p.dp == 0 else None
    if per_dp is None:
        errs.append(f"training.global_batch_size: {t.global_batch_size} not divisible by dp ({p.dp})")
    elif per_dp % t.micro_batch_size:
        errs.append(
            f"training.micro_batch_size: {t.micro_batch_size} must divide the per-dp batch "
            f"global_batch_size/dp = {per_dp}"
        )
    elif p.pp > 1:
        mb = p.microbatches or p.pp
        if per_dp % mb:
            errs.append(f"parallelism.microbatches: {mb} must divide the per-dp batch {per_dp}")
        if p.schedule != "gpipe" and mb < p.pp:
            errs.append(f"parallelism.microbatches: {p.schedule} needs microbatches >= pp ({p.pp})")
        if p.schedule == "interleaved_1f1b" and mb % p.pp:
            errs.append(f"parallelism.microbatches: interleaved_1f1b needs a multiple of pp ({p.pp})")
    if r.nodes is not None and r.ranks_per_node is not None:
        slots = r.nodes * r.ranks_per_node
        if spec.world_size > slots:
            errs.append(
                f"parallelism: dp*tp*pp*cp = {p.dp}*{p.tp}*{p.pp}*{p.cp} = {spec.world_size} ranks "
                f"do not fit resources.nodes*ranks_per_node = {r.nodes}*{r.ranks_per_node} = {slots}"
            )
    if r.ranks_per_node is not None and p.tp > 1 and r.ranks_per_node % p.tp:
        errs.append(f"parallelism.tp: tp ({p.tp}) must divide resources.ranks_per_node ({r.ranks_per_node})")
    if r.gpus_per_rank > 1 and r.gpus_per_rank != int(r.gpus_per_rank):
        errs.append(f"resources.gpus_per_rank: {r.gpus_per_rank} must be a whole number above 1")
    return errs


class JobFileError(ValueError):
    """A job file that cannot be used; the message is one line for the user."""


_UNION_MEMBER = re.compile(r"^(int|float|str|bool|none|[a-z-]+\[.*\])$")
"""How pydantic names the member of a union a value was tried against, as the last part of an error's loc."""
_FIELD_FIRST = re.compile(r"^[a-z_]+(\.[a-z_]+)+: ")
"""A whole-job check's message that already starts with the field it is about."""


def _value_loc(err: Any) -> tuple[Any, ...]:
    """Where the value an error is about sits: its loc without a union member's name."""
    loc = tuple(err["loc"])
    return loc[:-1] if loc and isinstance(loc[-1], str) and _UNION_MEMBER.match(loc[-1]) else loc


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(x) if x != "async_" else "async" for x in loc
             if not (isinstance(x, str) and x.startswith(("function-", "model-")))]
    return ".".join(parts) if parts else "(top level)"


def format_validation_error(path: str, err: ValidationError) -> str:
    errors = err.errors()
    first = errors[0]
    where = _value_loc(first)
    # One value tried against every member of a union (`int | "auto"`): one problem, each member's wish.
    union = [e for e in errors if len(e["loc"]) > len(where) and _value_loc(e) == where
             and e.get("input") == first.get("input")]
    loc = _loc(where)
    if len(union) > 1:
        wants = [e["msg"].removeprefix("Input should be ").split(",")[0] for e in union]
        msg = f"should be {' or '.join(wants)}, not {first['input']!r}"
    else:
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        elif first["type"] == "missing":
            msg = "required key is missing"
    rest = len({_value_loc(e) for e in errors}) - 1
    more = f" (and {rest} more)" if rest else ""
    if loc == "(top level)" and _FIELD_FIRST.match(msg):
        return f"{path}: {msg}{more}"
    return f"{path}: {loc}: {msg}{more}"


def load_job_file(path: str | os.PathLike[str], *, check_data: bool = True) -> JobSpec:
    """Read and validate a job file.

    Raises:
        JobFileError: one line naming the file, the field and the reason.
    """
    p = Path(path)
    if not p.is_file():
        raise JobFileError(f"{p}: no such job file")
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise JobFileError(f"{p}: cannot read: {e.strerror or e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise JobFileError(f"{p}:{where} not valid YAML") from None
    if not isinstance(raw, dict):
        raise JobFileError(f"{p}: the job file must be a mapping of sections")
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as e:
        raise JobFileError(format_validation_error(str(p), e)) from None
    spec = resolve_paths(spec, p.parent)
    if check_data and not resolve_data_files(spec.data.paths):
        raise JobFileError(f"{p}: data.paths: no files match {spec.data.paths}")
    if check_data and spec.model.init_from is not None:
        err = init_from_error(spec.model)
        if err is not None:
            raise JobFileError(f"{p}: model.init_from: {err}")
    return spec


def init_from_error(model: ModelSpec) -> str | None:
    """Why `model.init_from` cannot start this model (None when it can): missing folder or other shapes."""
    assert model.init_from is not None
    folder = Path(model.init_from)
    if not folder.is_dir():
        return f"no such folder {folder}"
    # torch only for jobs that start from weights: validating other job files stays cheap.
    from safetensors import SafetensorError

    from trainer.hf import HFFormatError, check_folder

    try:
        check_folder(folder, model.model_args())
    except HFFormatError as e:
        return str(e)
    except (OSError, SafetensorError) as e:
        lines = str(e).strip().splitlines()
        return f"{folder}: unreadable weights ({lines[0] if lines else type(e).__name__})"
    return None


def expand_data_path(pattern: str) -> str:
    """Expand `{stdlib}` (the Python standard library folder) and `~`."""
    import sysconfig

    return os.path.expanduser(pattern.replace("{stdlib}", sysconfig.get_paths()["stdlib"]))


def resolve_paths(spec: JobSpec, base: Path) -> JobSpec:
    """Make relative data and checkpoint paths relative to the job file's folder."""

    def fix(s: str) -> str:
        s = expand_data_path(s)
        return s if os.path.isabs(s) else str((base / s).resolve())

    data = spec.data.model_copy(update={"paths": [fix(x) for x in spec.data.paths]})
    ckpt = spec.checkpoint
    if ckpt.folder is not None:
        ckpt = ckpt.model_copy(update={"folder": fix(ckpt.folder)})
    model = spec.model
    if model.init_from is not None:
        model = model.model_copy(update={"init_from": fix(model.init_from)})
    return spec.model_copy(update={"data": data, "checkpoint": ckpt, "model": model})


def resolve_data_files(patterns: list[str]) -> list[str]:
    return resolve_files([expand_data_path(p) for p in patterns])
