"""Scenario files for `orchestrator sim`: one job on H hosts x G GPUs for D days, with failure rates.

Validated with pydantic (unknown keys are errors) before anything runs. Rates
come from observed counts: `failures.counts` seen over `failures.over_days` on
`failures.on_hosts` hosts give a rate per host-day for each category.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.spec import format_validation_error
from orchestrator.taxonomy import CATEGORIES

DETECTION_KINDS = ("crash", "hang", "node_lost", "bad_gpu", "sdc")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message is one line naming the field or file."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterSim(_Section):
    hosts: int = Field(gt=0)
    """Hosts the job uses at its full data-parallel degree."""
    gpus_per_host: int = Field(8, gt=0)
    spares: int = Field(0, ge=0)
    """Healthy hosts held aside, swapped in for a cordoned one."""
    repair_hours: float = Field(72.0, gt=0)
    """Mean time until a cordoned or lost host is back (exponentially distributed)."""
    maintenance_hours: float = Field(4.0, gt=0)
    """Mean time a host taken down by unplanned maintenance stays away."""
    lemons: int = Field(0, ge=0)
    """Hosts whose hardware fails `lemon_rate_multiplier` times as often as the others (same cluster mean)."""
    lemon_rate_multiplier: float = Field(10.0, ge=1.0)


class JobSim(_Section):
    days: float = Field(gt=0)
    step_seconds: float = Field(gt=0)
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    cp: int = Field(1, ge=1)
    global_batch: int = Field(gt=0)
    """Sequences per step: a shrunk data-parallel degree must divide it."""
    micro_batch: int = Field(1, gt=0)
    allow_shrink_dp: bool = True


class CheckpointSim(_Section):
    interval_minutes: float = Field(gt=0)
    """Training time between committed (DCP) checkpoints."""
    blocking_seconds: float = Field(0.0, ge=0)
    """Time the training loop waits on each save."""
    in_memory_interval_steps: int = Field(0, ge=0)
    """Steps between in-memory snapshots kept in a peer host's memory (0: off)."""
    in_memory_blocking_seconds: float = Field(0.0, ge=0)


class RecoverySim(_Section):
    detection_seconds: dict[str, float] = Field(
        default_factory=lambda: {"crash": 30.0, "hang": 600.0, "node_lost": 60.0, "bad_gpu": 60.0, "sdc": 3600.0})
    """Fault to Finding, by how the fault shows itself."""
    teardown_seconds: float = Field(30.0, ge=0)
    preflight_seconds: float = Field(60.0, ge=0)
    restart_seconds: float = Field(300.0, ge=0)
    """Restart in place (same gang): rendezvous, load the checkpoint, first step."""
    new_gang_seconds: float = Field(120.0, ge=0)
    """Added when a new gang is placed (a spare swapped in, dp shrunk or grown)."""
    planned_seconds: float = Field(600.0, ge=0)
    """Downtime of a planned interruption (maintenance, config change) before the restart."""
    operator_minutes: float = Field(60.0, ge=0)
    """Until an operator resubmits a job that the failure policy failed."""

    @field_validator("detection_seconds")
    @classmethod
    def _kinds(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) - set(DETECTION_KINDS))
        if bad:
            raise ValueError(f"unknown detection kind {bad[0]!r}; choose from {', '.join(DETECTION_KINDS)}")
        if any(x < 0 for x in v.values()):
            raise ValueError("detection seconds must be >= 0")
        defaults = RecoverySim.model_fields["detection_seconds"].default_factory()  # type: ignore[misc]
        return {**defaults, **v}


class FailuresSim(_Section):
    counts: dict[str, int]
    """Unexpected interruptions per category seen over `over_days` on `on_hosts` hosts."""
    planned: int = Field(0, ge=0)
    over_days: float = Field(gt=0)
    on_hosts: int = Field(gt=0)
    rate_scale: float = Field(1.0, gt=0)

    @field_validator("counts")
    @classmethod
    def _categories(cls, v: dict[str, int]) -> dict[str, int]:
        bad = sorted(set(v) - set(CATEGORIES))
        if bad:
            raise ValueError(f"unknown category {bad[0]!r}")
        if any(n < 0 for n in v.values()) or not any(v.values()):
            raise ValueError("counts must be >= 0 and not all zero")
        return v


class PolicySim(_Section):
    max_restarts: int = Field(50, ge=0)
    restart_window_s: float = Field(86_400.0, gt=0)
    crash_loop_attempts: int = Field(3, ge=1)
    cordon_confidence: float = Field(0.75, ge=0, le=1)
    lemon_threshold: int = Field(2, ge=1)


class SweepSim(_Section):
    checkpoint_interval_minutes: list[float] = Field(default_factory=list)
    restart_seconds: list[float] = Field(default_factory=list)
    detection_seconds: list[float] = Field(default_factory=list)
    """Sets every detection kind except SDC to the value."""
    spares: list[int] = Field(default_factory=list)
    in_memory_interval_steps: list[int] = Field(default_factory=list)
    target_ettr: float = Field(0.97, gt=0, le=1)
    days: float | None = Field(None, gt=0)
    """Shorter horizon for the sweep's runs (default: the scenario's)."""


class Scenario(_Section):
    name: str
    cluster: ClusterSim
    job: JobSim
    checkpoint: CheckpointSim
    recovery: RecoverySim = RecoverySim()
    failures: FailuresSim
    policy: PolicySim = PolicySim()
    sweep: SweepSim = SweepSim()

    @model_validator(mode="after")
    def _layout(self) -> Scenario:
        gpus = self.cluster.hosts * self.cluster.gpus_per_host
        mp = self.job.tp * self.job.pp * self.job.cp
        if gpus % mp:
            raise ValueError(f"job: tp*pp*cp={mp} does not divide cluster.hosts*gpus_per_host={gpus}")
        if mp % self.cluster.gpus_per_host and self.cluster.gpus_per_host % mp:
            raise ValueError(f"job: a replica of tp*pp*cp={mp} ranks must fill whole hosts of "
                             f"{self.cluster.gpus_per_host} GPUs")
        dp = gpus // mp
        if self.job.global_batch % dp or (self.job.global_batch // dp) % self.job.micro_batch:
            raise ValueError(f"job: global_batch={self.job.global_batch} is not a multiple of dp={dp} x "
                             f"micro_batch={self.job.micro_batch}")
        if self.cluster.lemons > self.cluster.hosts + self.cluster.spares:
            raise ValueError("cluster: more lemons than hosts")
        return self

    @property
    def model_parallel(self) -> int:
        return self.job.tp * self.job.pp * self.job.cp

    @property
    def dp(self) -> int:
        return self.cluster.hosts * self.cluster.gpus_per_host // self.model_parallel

    @property
    def gpus(self) -> int:
        return self.cluster.hosts * self.cluster.gpus_per_host


def parse_scenario(data: object, source: str = "scenario") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping at the top level")
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(format_validation_error(source, e)) from None


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{p}: cannot read: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ScenarioError(f"{p}: not valid YAML{where}") from None
    return parse_scenario(data, str(p))
