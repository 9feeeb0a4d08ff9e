"""Synthesized evidence: one short log excerpt per category, in the wording of real incidents.

The simulated hardware fails; what the classifier reads is what the node agent
would have sent: kernel, driver, BMC and trainer lines carrying the category's
signature (NVIDIA Xid catalog, Linux kernel, ipmitool SEL, NCCL, PyTorch),
with the host, rank, GPU, PCI address and ids varied per incident.
"""

from __future__ import annotations

import random

# How each category shows itself to the controller (the Finding that ends the attempt).
SURFACES: dict[str, str] = {
    "faulty_gpu": "crash", "gpu_hbm3_memory": "crash", "software_bug": "crash",
    "network_switch_cable": "hang", "host_maintenance": "node_lost", "gpu_sram_memory": "crash",
    "gpu_system_processor": "hang", "nic": "crash", "nccl_watchdog_timeout": "hang",
    "silent_data_corruption": "sdc", "gpu_thermal_interface_sensor": "bad_gpu", "ssd": "crash",
    "power_supply": "node_lost", "server_chassis": "node_lost", "io_expansion_board": "crash",
    "dependency": "crash", "cpu": "node_lost", "system_memory": "node_lost",
}

TEMPLATES: dict[str, str] = {
    "faulty_gpu": (
        "{ts} {host} kernel: NVRM: Xid (PCI:{pci}): 79, pid={pid}, GPU has fallen off the bus.\n"
        "[rank{rank}]: RuntimeError: CUDA error: unspecified launch failure"),
    "gpu_hbm3_memory": (
        "{ts} {host} kernel: NVRM: Xid (PCI:{pci}): 48, pid={pid}, An uncorrectable double bit error (DBE) "
        "has been detected on GPU in the framebuffer at partition {n}, subpartition 0.\n"
        "[rank{rank}]: RuntimeError: CUDA error: uncorrectable ECC error encountered"),
    "software_bug": (
        "[rank{rank}]: Traceback (most recent call last):\n"
        "[rank{rank}]:   File \"/opt/train/trainer/loop.py\", line 212, in train_step\n"
        "[rank{rank}]: IndexError: index {n} is out of bounds for dimension 0 with size 4096"),
    "network_switch_cable": (
        "{ts} {host} kernel: mlx5_core {pci} eth{gpu}: Link down\n"
        "{host}:{pid}:{pid} [{gpu}] NCCL WARN NET/IB : Got completion from peer 10.{a}.{b}.{c}<{port}> with "
        "error 12, opcode 0, len 0, vendor err 129 (Recv) transport retry counter exceeded"),
    "host_maintenance": (
        "{ts} {host} systemd-logind[{pid}]: System is rebooting (kernel update {kver} reboot by operations).\n"
        "ray: node {host} marked dead: heartbeat missed"),
    "gpu_sram_memory": (
        "{ts} {host} nvidia-healthd: GPU{gpu} SRAM uncorrectable ECC error count {n} exceeds threshold "
        "(DCGM_FR_SRAM_THRESHOLD)\n"
        "[rank{rank}]: RuntimeError: CUDA error: an illegal memory access was encountered"),
    "gpu_system_processor": (
        "{ts} {host} kernel: NVRM: Xid (PCI:{pci}): 119, pid={pid}, Timeout after 6s of waiting for RPC "
        "response from GPU{gpu} GSP! Expected function 76 (GSP_RM_CONTROL).\n"
        "[rank{rank}]: [E ProcessGroupNCCL.cpp:1404] Watchdog caught collective operation timeout"),
    "nic": (
        "{ts} {host} kernel: mlx5_core {pci}: mlx5_health_check:{n}: health compromised - reached miss count\n"
        "{ts} {host} kernel: mlx5_core {pci}: firmware fatal error, syndrome 0x{syn:x}"),
    "nccl_watchdog_timeout": (
        "[rank{rank}]: [E ProcessGroupNCCL.cpp:616] [Rank {rank}] Watchdog caught collective operation timeout: "
        "WorkNCCL(SeqNum={seq}, OpType=ALLREDUCE, NumelIn={n}, NumelOut={n}, Timeout(ms)=600000) ran for "
        "600{ms:03d} milliseconds before timing out."),
    "silent_data_corruption": (
        "[rank{rank}]: sdc-check: replica {gpu} parameter checksum mismatch at step {step}: 0x{syn:x} vs "
        "0x{syn2:x}; a replay elsewhere agrees with the others: silent data corruption on {host}"),
    "gpu_thermal_interface_sensor": (
        "{ts} {host} nvidia-healthd: GPU{gpu} clocks_event_reasons.hw_thermal_slowdown Active, GPU temperature "
        "{temp} C exceeds the slowdown threshold"),
    "ssd": (
        "{ts} {host} kernel: nvme nvme{gpu}: I/O {n} QID 4 timeout, reset controller\n"
        "{ts} {host} kernel: blk_update_request: I/O error, dev nvme{gpu}n1, sector {sector}"),
    "power_supply": (
        "SEL {host}: {sel} | Power Supply #0x{gpu:02x} | Failure detected | Asserted\n"
        "SEL {host}: {sel} | Power Unit #0x01 | Redundancy Lost | Asserted"),
    "server_chassis": (
        "SEL {host}: {sel} | Fan #0x{gpu:02x} | Lower Critical going low | Asserted\n"
        "SEL {host}: {sel} | Chassis #0x01 | fault: baseboard fan controller failed | Asserted"),
    "io_expansion_board": (
        "{ts} {host} kernel: pcieport {pci}: PCIe switch PEX89104 uplink error: Uncorrected (Fatal), link down\n"
        "{ts} {host} kernel: pcieport {pci}: devices behind the switch (GPUs 4-7, mlx5_4-7) removed"),
    "dependency": (
        "{ts} {host} kernel: nfs: server fs-{n}.storage not responding, still trying\n"
        "[rank{rank}]: OSError: [Errno 5] Input/output error: '/mnt/data/shard-{n}.bin'"),
    "cpu": (
        "{ts} {host} kernel: mce: [Hardware Error]: CPU {gpu}: Machine Check Exception: 5 Bank {n}: "
        "be00000000800400\n{ts} {host} kernel: Kernel panic - not syncing: Fatal machine check"),
    "system_memory": (
        "{ts} {host} kernel: EDAC MC{gpu}: 1 UE memory read error on CPU_SrcID#0_MC#0_Chan#{n}_DIMM#0\n"
        "{ts} {host} kernel: Kernel panic - not syncing: Fatal uncorrectable memory error"),
}

PLANNED = "planned maintenance: firmware upgrade of the fleet; the job stops after its checkpoint and resumes"


def evidence_text(category: str, rng: random.Random, host: str, rank: int, gpu: int, step: int) -> str:
    """One incident's log excerpt for `category`, its variable parts drawn from `rng`."""
    bus = rng.choice(("18", "3b", "5d", "86", "af", "d8", "bb", "cc"))
    return TEMPLATES[category].format(
        ts=f"Mar {rng.randint(1, 28)} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        host=host, rank=rank, gpu=gpu, step=step, pci=f"0000:{bus}:00.0", pid=rng.randint(1000, 99999),
        n=rng.randint(1, 4000), seq=rng.randint(10_000, 9_000_000), ms=rng.randint(0, 999),
        a=rng.randint(0, 255), b=rng.randint(0, 255), c=rng.randint(1, 254), port=rng.randint(1024, 65000),
        syn=rng.getrandbits(32), syn2=rng.getrandbits(32), temp=rng.randint(92, 105),
        sector=rng.randint(1_000_000, 900_000_000), sel=f"{rng.randint(1, 0xffff):x}",
        kver=f"6.{rng.randint(1, 9)}.{rng.randint(0, 60)}")
