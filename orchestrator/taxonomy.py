"""The failure taxonomy: the rows of Llama 3's Table 5 plus `unknown` (DESIGN.md)."""

from __future__ import annotations

COMPONENT_OF: dict[str, str] = {
    "faulty_gpu": "gpu",
    "gpu_hbm3_memory": "gpu",
    "software_bug": "dependency",
    "network_switch_cable": "network",
    "host_maintenance": "unplanned_maintenance",
    "gpu_sram_memory": "gpu",
    "gpu_system_processor": "gpu",
    "nic": "host",
    "nccl_watchdog_timeout": "unknown",
    "silent_data_corruption": "gpu",
    "gpu_thermal_interface_sensor": "gpu",
    "ssd": "host",
    "power_supply": "host",
    "server_chassis": "host",
    "io_expansion_board": "host",
    "dependency": "dependency",
    "cpu": "host",
    "system_memory": "host",
    "unknown": "unknown",
}
CATEGORIES: tuple[str, ...] = tuple(COMPONENT_OF)
COMPONENTS: tuple[str, ...] = ("gpu", "host", "network", "dependency", "unplanned_maintenance", "unknown")

HARDWARE_CATEGORIES = frozenset(
    c for c, comp in COMPONENT_OF.items() if comp in ("gpu", "host", "network")
)
"""Categories that point at a host's hardware: the host is cordoned."""


def component_of(category: str) -> str:
    try:
        return COMPONENT_OF[category]
    except KeyError:
        raise ValueError(f"unknown category {category!r}; choose one of {', '.join(CATEGORIES)}") from None
