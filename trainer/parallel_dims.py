"""The single place that checks parallel degrees and builds the device mesh.

Mesh order follows Llama 3 (§3.3.2): [TP, CP, PP, DP] from innermost to
outermost, so tensor-parallel ranks are neighbours (same host) and data
parallelism spans hosts. As a mesh shape that is (dp, pp, cp, tp).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

MESH_DIM_NAMES = ("dp", "pp", "cp", "tp")


@dataclass(frozen=True, slots=True)
class ParallelDims:
    dp: int
    tp: int
    pp: int
    cp: int
    world_size: int

    def __post_init__(self) -> None:
        for name in MESH_DIM_NAMES:
            if getattr(self, name) < 1:
                raise ValueError(f"parallel degree {name}={getattr(self, name)} must be >= 1")
        if self.dp * self.pp * self.cp * self.tp != self.world_size:
            raise ValueError(
                f"Invalid parallel dims: dp({self.dp}) * pp({self.pp}) * cp({self.cp}) * "
                f"tp({self.tp}) != world_size({self.world_size})"
            )

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.dp, self.pp, self.cp, self.tp)

    def coords(self, rank: int) -> dict[str, int]:
        """Coordinates of a global rank in the mesh (row-major, tp fastest)."""
        out: dict[str, int] = {}
        for name, size in zip(reversed(MESH_DIM_NAMES), reversed(self.shape), strict=True):
            out[name] = rank % size
            rank //= size
        return {n: out[n] for n in MESH_DIM_NAMES}

    def build_mesh(self, device_type: str) -> ParallelMesh:
        mesh = init_device_mesh(device_type, self.shape, mesh_dim_names=MESH_DIM_NAMES)
        # FSDP shards over data and context parallel ranks together: both see
        # different tokens of the same model replica.
        dp_cp = mesh["dp", "cp"]._flatten("dp_cp")
        return ParallelMesh(mesh, dp_cp)


class ParallelMesh:
    """The 4D mesh plus the flattened dp×cp mesh that FSDP shards over."""

    def __init__(self, world: DeviceMesh, dp_cp: DeviceMesh) -> None:
        self.world, self.dp_cp = world, dp_cp

    def __getitem__(self, name: str) -> DeviceMesh:
        return self.dp_cp if name == "dp_cp" else self.world[name]

    def group_members(self) -> dict[str, dict[str, object]]:
        """Process group name -> its mesh dimension and global member ranks, for the beacon.

        Group names are the ones torch's flight recorder reports, so the health
        detectors compare collective progress only among members of one group.
        """
        out: dict[str, dict[str, object]] = {}
        world = dist.group.WORLD
        if world is not None:
            out[world.group_name] = {"dim": "world", "ranks": list(range(dist.get_world_size()))}
        for name in (*MESH_DIM_NAMES, "dp_cp"):
            g = self[name].get_group()
            if g.group_name in out:  # one group serving several dims (pp=4: the world is the pp group)
                out[g.group_name]["dim"] = f"{out[g.group_name]['dim']}/{name}"
                continue
            out[g.group_name] = {"dim": name, "ranks": [int(r) for r in dist.get_process_group_ranks(g)]}
        return out
