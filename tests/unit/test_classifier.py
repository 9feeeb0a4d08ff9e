"""The classifier against DESIGN.md's conventions ("How evidence decides a category").

The labelled development set lives in tests/fixtures/evidence/dev (README there);
the one-line cases below use real wording from NVIDIA's Xid catalog, the Linux
kernel, ipmitool SEL, NCCL and PyTorch, one per rule row, so that removing a rule
fails a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.classifier import classify
from orchestrator.evidence_lines import host_of
from orchestrator.taxonomy import CATEGORIES

DEV = Path(__file__).resolve().parents[1] / "fixtures" / "evidence" / "dev"
FILES = sorted(DEV.glob("*/*.log"))
HOSTS = {k: [v] if isinstance(v, str) else v for k, v in json.loads((DEV / "hosts.json").read_text()).items()}


def test_dev_set_covers_every_category() -> None:
    assert {f.parent.name for f in FILES} == set(CATEGORIES)
    assert all(sum(1 for f in FILES if f.parent.name == c) >= 4 for c in CATEGORIES)
    assert set(HOSTS) <= {f.relative_to(DEV).as_posix() for f in FILES}


@pytest.mark.parametrize("f", FILES, ids=lambda f: f"{f.parent.name}/{f.name}")
def test_dev_set_file(f: Path) -> None:
    v = classify(f.read_text())
    assert v.category == f.parent.name, v.explanation
    want = HOSTS.get(f.relative_to(DEV).as_posix())
    if want is not None:
        assert v.hosts and v.hosts[0] in want, v.hosts


# --- one real signature per rule row (DESIGN.md rules 5-7) --------------------------------------------------
ROWS = [
    ("faulty_gpu", "kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid=0, GPU has fallen off the bus."),
    ("faulty_gpu", "NVRM: GPU 0000:86:00.0: GPU has fallen off the bus."),
    ("faulty_gpu", "kernel: NVRM: Xid (PCI:0000:18:00): 74, pid=1, name=python, NVLink: fatal error detected on link 2(0x0, 0x0)"),
    ("faulty_gpu", "nvidia-smi: Unable to determine the device handle for GPU0000:ad:00.0: Unknown Error"),
    ("faulty_gpu", "preflight host=n1: expected 8 GPUs, found 7"),
    ("faulty_gpu", "preflight host=n1 gpu=2 matmul burn-in FAILED: result differs from reference"),
    ("faulty_gpu", "kernel: nvidia 0000:3b:00.0: AER: PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer, (Receiver ID) NVIDIA 3D controller"),
    ("gpu_hbm3_memory", "kernel: NVRM: Xid (PCI:0000:5d:00): 48, pid=9, name=python, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 3"),
    ("gpu_hbm3_memory", "kernel: NVRM: Xid (PCI:0000:5d:00): 63, pid=0, Row Remapper: New row marked for remapping, reset gpu to activate."),
    ("gpu_hbm3_memory", "kernel: NVRM: Xid (PCI:0000:5d:00): 64, pid=0, Row remapping failed"),
    ("gpu_hbm3_memory", "kernel: NVRM: Xid (PCI:0000:5d:00): 95, pid=2, name=python, Uncontained: FBHUB. RST: Yes, D-RST: No"),
    ("gpu_hbm3_memory", "nvidia-smi -q: Remapped Rows: Pending : Yes"),
    ("gpu_hbm3_memory", "nvidia-smi -q: Remapping Failure Occurred : Yes"),
    ("gpu_hbm3_memory", "probe host=n1 gpu=1 ecc.volatile.dram.uncorrected=2 DRAM Uncorrectable : 2"),
    ("gpu_sram_memory", "kernel: NVRM: Xid (PCI:0000:5d:00): 94, pid=2, name=python, Contained: SRAM uncorrectable ECC error. RST: No, D-RST: No"),
    ("gpu_sram_memory", "nvidia-smi -q: SRAM Uncorrectable : 3"),
    ("gpu_sram_memory", "dcgm: DCGM_FR_SRAM_THRESHOLD GPU 1: SRAM uncorrectable ECC error count exceeds threshold"),
    ("gpu_system_processor", "kernel: NVRM: Xid (PCI:0000:d8:00): 119, pid=1, name=python, Timeout after 6s of waiting for RPC response from GPU7 GSP!"),
    ("gpu_system_processor", "kernel: NVRM: Xid (PCI:0000:d8:00): 120, pid=0, GSP task exception"),
    ("gpu_thermal_interface_sensor", "nvidia-smi -q: HW Thermal Slowdown : Active"),
    ("gpu_thermal_interface_sensor", "probe host=n1 gpu=6 temperature sensor reading failed: NVML_ERROR_NOT_SUPPORTED"),
    ("gpu_thermal_interface_sensor", "  5a1 | 03/11/2026 | 06:12:40 | Temperature GPU3_Temp | Upper Critical going high | Asserted"),
    ("silent_data_corruption", "sdc-check: replica 5 checksum 0x6a disagrees with the other replicas; replay of the step on another host agrees with the majority"),
    ("software_bug", "kernel: Out of memory: Killed process 41213 (python) total-vm:912338112kB, anon-rss:501223104kB"),
    ("software_bug", "[rank3]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 8.00 GiB."),
    ("software_bug", "[rank3]: ValueError: loss is nan at step 41200"),
    ("software_bug", "[rank3]: ModuleNotFoundError: No module named 'flash_attn_3'"),
    ("software_bug", "[rank3]: RuntimeError: CUDA error: an illegal memory access was encountered"),
    ("software_bug", "kernel: NVRM: Xid (PCI:0000:3b:00): 31, pid=5, name=python, Ch 00000010, intr 10000000. MMU Fault: ENGINE GRAPHICS"),
    ("cpu", "kernel: mce: [Hardware Error]: CPU 37: Machine Check Exception: 5 Bank 4: bea0000000000108"),
    ("cpu", "  c1 | 03/22/2026 | 13:40:11 | Processor #0x8c | IERR | Asserted"),
    ("cpu", "  c1 | 03/22/2026 | 13:40:11 | Processor CPU0 | Thermal Trip | Asserted"),
    ("system_memory", "kernel: EDAC MC1: 1 UE memory read error on CPU_SrcID#1_MC#0_Chan#2_DIMM#0 (channel:2 slot:0 page:0x4f21c)"),
    ("system_memory", "  d2 | 03/23/2026 | 11:05:40 | Memory #0x53 | Uncorrectable ECC | Asserted"),
    ("ssd", "kernel: nvme nvme0: I/O 123 QID 4 timeout, reset controller"),
    ("ssd", "kernel: blk_update_request: I/O error, dev nvme0n1, sector 182733312 op 0x1:(WRITE)"),
    ("ssd", "kernel: Buffer I/O error on dev nvme0n1p1, logical block 1239851, async page read"),
    ("power_supply", "   2 | 03/19/2026 | 03:11:58 | Power Supply #0x51 | Power Supply AC lost | Asserted"),
    ("power_supply", "   3 | 03/19/2026 | 03:11:58 | Power Supply #0x51 | Failure detected () | Asserted"),
    ("server_chassis", "  2e | 03/20/2026 | 04:11:00 | Physical Security #0x73 | General Chassis intrusion | Asserted"),
    ("server_chassis", "  71 | 03/20/2026 | 16:20:31 | Fan FAN4 | Lower Critical going low | Asserted"),
    ("io_expansion_board", "kernel: pcieport 0000:16:00.0: PCIe switch upstream port (PEX89144) error: link down, 2 downstream devices lost"),
    ("io_expansion_board", "bmc: Riser2 PCIe retimer RT3 fault detected; slots 3-4 link down"),
    ("nic", "kernel: mlx5_core 0000:8a:00.0: mlx5_unload_one: device's health compromised - reached miss count"),
    ("nic", "kernel: mlx5_core 0000:0c:00.0: poll_health:801:(pid 0): Fatal error 1 detected"),
    ("network_switch_cable", "kernel: mlx5_core 0000:0c:00.0 ibp12s0: Link down"),
    ("network_switch_cable", "SymbolErrorCounter:..............4211"),
    ("network_switch_cable", "opensm: Physical link state changed to Polling on port 33 of leaf-sw-08"),
    ("host_maintenance", "slurmctld: update_node: node node-17 state set to DRAINING, Reason=kernel update 6.8.0-51 [ops@root]"),
    ("dependency", "kernel: nfs: server fs-ckpt-03 not responding, still trying"),
    ("dependency", "[rank0]: OSError: [Errno 28] No space left on device: '/mnt/ckpt/step-00050000/__0_0.distcp'"),
    ("dependency", "[rank0]: checkpoint upload failed: S3 PutObject returned 503 Slow Down"),
    ("dependency", "[rank0]: socket.gaierror: [Errno -3] Temporary failure in name resolution"),
    ("faulty_gpu", "nvidia-smi: Unable to determine the device handle for GPU 0000:3B:00.0: GPU is lost.  Reboot the system to recover this GPU"),
    ("faulty_gpu", "nvidia-smi: No devices were found"),
    ("faulty_gpu", "dcgm: DCGM_FR_XID_ERROR: Detected XID 79 for GPU 3"),
    ("gpu_hbm3_memory", "gpu-health host=n1: GPU 2 Xid 48 detected"),
    ("gpu_hbm3_memory", "nvidia-smi: GPU 00000000:3B:00.0: Retired Pages Pending : Yes"),
    ("gpu_thermal_interface_sensor", "bmc: Thermal sensor on GPU 2 reports out-of-range value 255 C"),
    ("gpu_thermal_interface_sensor", "[Tue Mar  3 04:12:01 2026] NVRM: GPU at PCI:0000:3b:00: GPU thermal sensor missing"),
    ("silent_data_corruption", "sdc: loss on replica 5 diverged from the other replicas at step 300; re-executed the step on a spare node; output agreed with the majority"),
    ("nic", "ibstat: No IB devices found"),
    ("system_memory", "kernel: EDAC MC0: UE row 3, channel 1 (ch1 DIMM_B1)"),
    ("system_memory", "kernel: Memory failure: 0x12a40: Uncorrected hardware memory error in user-access at 7f1a2c000000"),
    ("ssd", "kernel: print_req_error: I/O error, dev nvme0n1, sector 1234"),
    ("ssd", "kernel: nvme nvme0: controller is down; will reset: CSTS=0x3, PCI_STATUS=0x10"),
    ("dependency", "kernel: LustreError: 11-0: lustre-OST0003-osc-ffff: operation ost_write to node 10.0.0.5@o2ib failed: rc = -107"),
    ("dependency", "botocore.exceptions.ClientError: An error occurred (ServiceUnavailable) when calling the GetObject operation"),
    ("dependency", "etcdserver: request timed out"),
    ("network_switch_cable", "kernel: bond0: link status definitely down for interface eth1, disabling it"),
    ("network_switch_cable", "kernel: mlx5_core 0000:0c:00.0: Port module event[error]: module 0, Cable error, Unplugged"),
    ("host_maintenance", "cloud: Instance node-17 was terminated due to host maintenance"),
    ("cpu", "kernel: [Hardware Error]: CPU:3 (17:31:0) MC4_STATUS[-|UE|MiscV|PCC|-|-|-]: 0xbe00000000800400"),
    ("server_chassis", "redfish: Chassis/1 PhysicalSecurity IntrusionSensor: HardwareIntrusion"),
    ("power_supply", "ipmitool sel: Power Unit #0x01 | AC lost | Asserted"),
    ("software_bug", '{"ts": "2026-03-03T04:12:01Z", "host":"node-17", "source": "trainer", "line": "KeyError: \'input_ids\'"}'),
    ("nccl_watchdog_timeout", "torch.distributed.DistBackendError: [3] is setting up NCCL communicator and retrieving ncclUniqueId from [0] via c10d key-value store by key '0', but store->get('0') got error: Socket Timeout"),
    ("nccl_watchdog_timeout", "[rank3]:[E1103 04:12:01.1 ProcessGroupNCCL.cpp:616] [Rank 3] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=8, OpType=ALLREDUCE, Timeout(ms)=600000) ran for 600011 milliseconds before timing out."),
    ("nccl_watchdog_timeout", "[rank3]:[E1103 04:12:01.1 ProcessGroupNCCL.cpp:1316] [PG ID 0 PG GUID 0(default_pg) Rank 3] Heartbeat monitor timed out! Process will be terminated after dumping debug info."),
]


@pytest.mark.parametrize(("category", "line"), ROWS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(ROWS)])
def test_rule_row(category: str, line: str) -> None:
    assert classify(line + "\n").category == category


# --- DESIGN.md rule 3: lines that never decide ---------------------------------------------------------------
NEVER_DECIDE = [
    "sdc-check: SDC check passed on all 8 replicas at step 5000",
    "sdc-check: silent data corruption check passed",
    "bmc host=gpu-a17: IO expansion board IOB1 status OK",
    "[rank0]:[I1103 09:00:00.1 ProcessGroupNCCL.cpp:917] [PG ID 0 PG GUID 0 Rank 0] ProcessGroupNCCL initialization options: size: 8, global rank: 0, TIMEOUT(ms): 600000, USE_HIGH_PRIORITY_STREAM: 0",
    "node-17:81:81 [0] NCCL INFO NCCL_IB_TIMEOUT set by environment to 22.",
    "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC=480",
    "kernel: NVRM: Xid (PCI:0000:3b:00): 92, pid=0, High single-bit ECC error rate",
    "nvidia-smi -q: Volatile Single Bit ECC errors: 14",
    "kernel: pcieport 0000:00:01.0: AER: Corrected error received: 0000:01:00.0",
    "kernel: nvme 0000:01:00.0: PCIe Bus Error: severity=Corrected, type=Physical Layer, (Receiver ID)",
    "kernel: EDAC MC1: 4 CE memory read error on CPU_SrcID#1_MC#0_Chan#0_DIMM#0",
    "  d1 | 03/23/2026 | 11:00:02 | Memory #0x53 | Correctable ECC | Asserted",
    "  2e | 03/20/2026 | 04:15:00 | Physical Security #0x73 | General Chassis intrusion | Deasserted",
    "  c1 | 03/22/2026 | 13:40:11 | Processor #0x8c | IERR | Deasserted",
    "probe host=gpu-a17 Remapped Rows: Pending: No, Remapping Failure Occurred: No; DRAM Uncorrectable: 0",
    "probe host=gpu-a17 gpu=1 ecc.volatile.sram.uncorrected=0 severity=ok",
    "nvidia-smi -q: HW Thermal Slowdown : Not Active",
    "perfquery: SymbolErrorCounter:..............0",
    "preflight host=n1 GPU burn-in passed on 8/8 GPUs; NVLink errors: 0",
    "smartctl: SMART overall-health self-assessment test result: PASSED",
    "controller: orchestrator stop requested by alice: planned stop for config change",
    "health check: no Xid 79 events since boot",
    "gpu-health: Xid 79 count: 0",
    "bmc: Chassis intrusion sensor: OK",
    "bmc: IERR count: 0",
    "switch: port 3 link down events: 0",
    "probe: row remapping: pending=no failure=no",
    "sdc-check: no silent data corruption detected",
    "sdc-check: silent data corruption: none detected",
    "kernel: IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
    "[rank0]:2026-05-03 11:00:00 INFO step 100 loss 2.0 lr 3e-4",
]


@pytest.mark.parametrize("line", NEVER_DECIDE)
def test_line_never_decides(line: str) -> None:
    v = classify(line + "\n")
    assert v.category == "unknown", v.explanation


def test_retried_and_recovered_warning_does_not_decide() -> None:
    text = ("Mar 26 15:00:01 node-17 kernel: nfs: server fs-ckpt-03 not responding, still trying\n"
            "Mar 26 15:00:31 node-17 kernel: nfs: server fs-ckpt-03 OK\n")
    assert classify(text).category == "unknown"
    assert classify(text.splitlines()[0]).category == "dependency"


def test_never_deciding_lines_do_not_hide_a_real_cause() -> None:
    text = ("bmc host=gpu-a17: IO expansion board IOB1 status OK\n"
            "kernel: NVRM: Xid (PCI:0000:3b:00): 92, pid=0, High single-bit ECC error rate\n"
            "Mar  3 04:12:01 gpu-a17 kernel: NVRM: Xid (PCI:0000:3b:00): 48, pid=1, An uncorrectable double bit error (DBE)\n")
    v = classify(text)
    assert (v.category, v.hosts) == ("gpu_hbm3_memory", ("gpu-a17",))


# --- DESIGN.md rules 1 and 2: the first cause wins, timeouts are what is left -------------------------------
def test_first_cause_wins_by_timestamp_not_by_text_order() -> None:
    # The peers' logs come first in the text, but node-17's Xid 79 happened ten minutes earlier.
    text = "\n".join([
        "2026-03-03T04:22:03Z node-21 trainer[9]: [rank9]: Watchdog caught collective operation timeout: WorkNCCL(SeqNum=8, OpType=ALLREDUCE, Timeout(ms)=600000) ran for 600011 milliseconds before timing out.",
        "2026-03-03T04:22:03Z node-22 trainer[9]: node-22:9:12 [1] NCCL WARN Net : Call to recv from 10.4.2.17<51234> failed : Connection reset by peer",
        "2026-03-03T04:22:04Z node-22 trainer[9]: [rank12]: torch.distributed.DistBackendError: NCCL communicator was aborted on rank 12.",
        "2026-03-03T04:22:05Z node-23 kernel: mlx5_core 0000:0c:00.0 ibp12s0: Link down",
        "2026-03-03T04:12:01Z node-17 kernel: NVRM: Xid (PCI:0000:86:00): 79, pid=1902, name=python, GPU has fallen off the bus.",
    ])
    v = classify(text)
    assert (v.category, v.hosts[0]) == ("faulty_gpu", "node-17"), v.explanation
    assert v.cordon


def test_link_down_then_nccl_errors_is_the_network() -> None:
    text = ("Mar 14 02:00:01 node-17 kernel: mlx5_core 0000:0c:00.0 ibp12s0: Link down\n"
            "Mar 14 02:00:09 node-18 trainer[3]: node-18:3:8 [2] NCCL WARN NET/IB : Got completion from peer 10.4.2.17<41234> with status=12 opcode=0 len=0 vendor err 129 (Send)\n"
            "Mar 14 02:10:11 node-18 trainer[3]: [rank10]: Watchdog caught collective operation timeout: WorkNCCL(SeqNum=77) ran for 600003 milliseconds before timing out.\n")
    v = classify(text)
    assert (v.category, v.hosts[0]) == ("network_switch_cable", "node-17")


def test_oom_killed_rank_then_peer_timeouts_is_the_rank() -> None:
    text = ("Mar 13 04:10:02 node-0412 kernel: Out of memory: Killed process 41213 (python) total-vm:912338112kB\n"
            "Mar 13 04:20:04 node-0413 trainer[1]: [rank8]: Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1) ran for 600001 milliseconds before timing out.\n")
    v = classify(text)
    assert (v.category, v.hosts[0]) == ("software_bug", "node-0412")


def test_earlier_cause_on_one_host_beats_later_cause_on_another() -> None:
    text = ("2026-03-22T01:05:00Z trn-2232 kernel: nvme nvme0: I/O 17 QID 2 timeout, reset controller\n"
            "2026-03-22T01:02:03Z trn-2231 kernel: mce: [Hardware Error]: CPU 37: Machine Check Exception: 5 Bank 4: bea0000000000108\n")
    v = classify(text)
    assert (v.category, v.hosts[0]) == ("cpu", "trn-2231")


def test_timeout_before_any_cause_is_the_watchdog() -> None:
    text = ("2026-03-25T04:00:00Z node-21 trainer[9]: [rank4]: Watchdog caught collective operation timeout: WorkNCCL(SeqNum=812) ran for 600002 milliseconds before timing out.\n"
            "2026-03-25T04:31:12Z node-30 kernel: nvme nvme0: I/O 17 QID 2 timeout, reset controller\n")
    assert classify(text).category == "nccl_watchdog_timeout"


def test_nothing_named_is_unknown_and_a_bare_hang_is_the_watchdog() -> None:
    assert classify("step 100 loss 2.0\nstep 101 loss 1.9\n").category == "unknown"
    assert classify("agent: rank 2 process exited (signal 9)\n", exit_signals=["SIGKILL"]).category == "unknown"
    assert classify("step 100 loss 2.0\n", kind="hang").category == "nccl_watchdog_timeout"


def test_application_xid_alone_is_software_but_not_with_hardware_evidence() -> None:
    app = "kernel: NVRM: Xid (PCI:0000:3b:00): 13, pid=1, Graphics SM Warp Exception on (GPC 3, TPC 1, SM 0): Out Of Range Address\n"
    assert classify(app).category == "software_bug"
    v = classify(app + "kernel: NVRM: Xid (PCI:0000:3b:00): 48, pid=1, An uncorrectable double bit error (DBE)\n"
                       "[rank3]: RuntimeError: CUDA error: an illegal memory access was encountered\n")
    assert v.category == "gpu_hbm3_memory" and set(v.xids) == {13, 48}


def test_machine_check_decoded_as_dimm_is_system_memory() -> None:
    text = ("Mar 23 02:30:44 gpu-a17 kernel: mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 7: cc00008000010090\n"
            "Mar 23 02:30:44 gpu-a17 kernel: EDAC MC0: 1 UE memory read error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0\n")
    assert classify(text).category == "system_memory"


def test_gpus_dropped_with_their_pcie_switch_are_the_io_board() -> None:
    text = ("Mar 21 09:00:14 node-17 kernel: NVRM: Xid (PCI:0000:18:00): 79, pid=1, GPU has fallen off the bus.\n"
            "Mar 21 09:00:14 node-17 kernel: pcieport 0000:16:00.0: PCIe switch upstream port (PEX89144) error: link down\n")
    assert classify(text).category == "io_expansion_board"
    # A switch fault an hour later on another host is not why this GPU fell off.
    later = text.replace("Mar 21 09:00:14 node-17 kernel: pcieport", "Mar 21 10:00:14 node-40 kernel: pcieport")
    assert classify(later).category == "faulty_gpu"


def test_several_devices_lost_at_once_on_one_host_is_the_io_board() -> None:
    one = "Mar 21 09:00:14 node-17 kernel: NVRM: Xid (PCI:0000:18:00): 79, pid=2201, name=python, GPU has fallen off the bus.\n"
    two = one + "Mar 21 09:00:14 node-17 kernel: NVRM: Xid (PCI:0000:1a:00): 79, pid=2202, name=python, GPU has fallen off the bus.\n"
    assert classify(one).category == "faulty_gpu"
    v = classify(two)
    assert (v.category, v.hosts, v.cordon) == ("io_expansion_board", ("node-17",), False)  # inferred: suspect only
    elsewhere = one + "Mar 21 09:00:14 node-18 kernel: NVRM: Xid (PCI:0000:1a:00): 79, pid=2202, name=python, GPU has fallen off the bus.\n"
    assert classify(elsewhere).category == "faulty_gpu"


# --- storage seen from the checkpoint path is never a GPU ---------------------------------------------------
@pytest.mark.parametrize(("category", "text"), [
    ("dependency", "[rank4]: OSError: [Errno 28] No space left on device: '/mnt/ckpt/step-00050000/__4_0.distcp'\n"),
    ("dependency", "[rank2]: OSError: [Errno 5] Input/output error: '/mnt/lustre/ckpt/step-00012000/__2_0.distcp'\n"),
    ("dependency", "controller: resume: checkpoint step-00040000: shard __3_0.distcp checksum mismatch for rank 3 (expected 9c1e, got 41ab)\n"),
    ("dependency", "controller: resume: no committed checkpoint could be loaded: all 2 checkpoints unreadable\n"),
    ("ssd", "[rank1]: OSError: [Errno 5] Input/output error: '/local_ssd/shard-0009.bin'\n"
            "kernel: nvme nvme0: I/O 88 QID 3 timeout, reset controller\n"),
])
def test_storage_faults(category: str, text: str) -> None:
    assert classify(text).category == category


# --- silent data corruption needs a replay to be sure ------------------------------------------------------
def test_replica_disagreement_is_suspect_until_a_replay_confirms_it() -> None:
    suspect = "sdc-check: replica 5 (host=gpu-b05) parameter checksum 0x6a1f03e2 disagrees with the other replicas at step 100\n"
    v = classify(suspect)
    assert (v.category, v.hosts, v.cordon) == ("silent_data_corruption", ("gpu-b05",), False)
    confirmed = classify(suspect + "sdc-check: replay of step 100 on another host (gpu-b09) agrees with the majority\n")
    assert confirmed.category == "silent_data_corruption" and confirmed.cordon
    refuted = classify(suspect + "sdc-check: replay of step 100 on another host (gpu-b09) also disagrees with the majority\n")
    assert refuted.category != "silent_data_corruption"


# --- DESIGN.md rule 4: hosts only from host fields ---------------------------------------------------------
@pytest.mark.parametrize(("line", "host"), [
    ("Mar  3 04:12:01 node-17 kernel: NVRM: Xid (PCI:0000:86:00): 79, pid=0, GPU has fallen off the bus.", "node-17"),
    ("2026-03-03T04:12:01.123456+00:00 gpu-a17 kernel: mce: [Hardware Error]: CPU 3: Machine Check", "gpu-a17"),
    ("probe host=trn-2231 gpu=1 ecc.volatile.sram.uncorrected=3", "trn-2231"),
    ('{"hostname": "h100-r7-n03", "msg": "Xid 79"}', "h100-r7-n03"),
    ("trn-2233:812:1044 [3] NCCL WARN NET/IB : Got completion from peer with status=12", "trn-2233"),
    ("(RankWorker pid=1234, ip=10.0.3.7) [rank2]: Watchdog caught collective operation timeout", "10.0.3.7"),
    ("agent: lost contact with host gpu-b05", None),
    ("INFO node rebalancing: moving 2 shards to host gpu-b05", None),
    ("[rank0]:2026-03-26 18:00:00 INFO the host lost its lease on the data loader cache", None),
    ("2026-03-26 18:00:00 WARNING trainer: step slow", None),
    ("kernel: nfs: server fs-ckpt-03 not responding, still trying", None),
])
def test_host_fields(line: str, host: str | None) -> None:
    assert host_of(line) == host


def test_header_line_names_the_host_of_the_lines_below() -> None:
    text = ("== host=gpu-b05 source=ipmitool ==\n"
            "  2e | 03/20/2026 | 04:11:00 | Physical Security #0x73 | General Chassis intrusion | Asserted\n")
    assert classify(text).hosts == ("gpu-b05",)


def test_a_fault_named_without_a_host_field_names_no_host() -> None:
    v = classify("agent: lost contact with node-0412\nkernel: nvme nvme0: I/O 1 QID 1 timeout, reset controller\n")
    assert (v.category, v.hosts) == ("ssd", ())


# --- confidence: cordon only on a specific signature -------------------------------------------------------
@pytest.mark.parametrize(("text", "cordon"), [
    ("Mar 3 04:12:01 n1 kernel: NVRM: Xid (PCI:0000:86:00): 79, pid=0, GPU has fallen off the bus.\n", True),
    ("  c1 | 03/22/2026 | 13:40:11 | Processor #0x8c | IERR | Asserted\n", True),
    ("n1:3:8 [2] NCCL WARN NET/IB : Got completion from peer 10.4.2.17<41234> with status=12 opcode=0\n", False),
    ("sdc-check: replica 5 (host=n1) parameter checksum 0x6a disagrees with the other replicas\n", False),
    ("nvidia-smi -q: HW Slowdown : Active\n", False),
    ("[rank3]: Watchdog caught collective operation timeout: WorkNCCL(SeqNum=8) ran for 600011 milliseconds before timing out.\n", False),
    ("kernel: mlx5_core 0000:0c:00.0 ibp12s0: Link down\n", True),
])
def test_cordon_only_when_confident(text: str, cordon: bool) -> None:
    v = classify(text)
    assert v.cordon is cordon, (v.category, v.confidence)


def test_a_rival_cause_at_the_same_moment_lowers_confidence() -> None:
    alone = classify("Mar 3 04:12:01 n1 kernel: nvme nvme0: I/O 1 QID 1 timeout, reset controller\n")
    rival = classify("Mar 3 04:12:01 n1 kernel: nvme nvme0: I/O 1 QID 1 timeout, reset controller\n"
                     "Mar 3 04:12:01 n1 kernel: mlx5_core 0000:0c:00.0 ibp12s0: Link down\n")
    assert rival.category == "ssd" and rival.confidence < alone.confidence
