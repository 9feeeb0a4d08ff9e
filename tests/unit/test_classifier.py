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
    ("network_switch_cable", "ethtool -S ibp12s0: rx_symbol_err_phy: 1234"),
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
    ('faulty_gpu', 'probe host=n1 gpu=3 nvmlDeviceGetHandleByIndex failed: NVML_ERROR_GPU_IS_LOST'),
    ('faulty_gpu', 'nvidia-smi: GPU 00000000:3B:00.0: GPU is lost. Reboot the system to recover this GPU'),
    ('faulty_gpu', 'preflight host=n1: GPU 5 missing from nvidia-smi -L'),
    ('faulty_gpu', 'kernel: NVRM: RmInitAdapter failed! (0x26:0xffff:1467)'),
    ('faulty_gpu', 'dcgmi health: GPU 2 NVLink link 4 down'),
    ('faulty_gpu', 'kernel: pcieport 0000:3a:00.0: AER: Uncorrected (Fatal) error received: 0000:3b:00.0 (NVIDIA Corporation GH100 [H100 SXM5 80GB])'),
    ('faulty_gpu', 'kernel: nvidia 0000:3b:00.0: AER: PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer, (Receiver ID)'),
    ('faulty_gpu', 'dcgmi diag -r 3: Targeted Stress ........ Fail - GPU: 2'),
    ('faulty_gpu', 'dcgm: DCGM_FR_PCI_REPLAY_RATE: Detected 120 PCIe replays per minute for GPU 3'),
    ('faulty_gpu', 'nvidia-smi: GPU 00000000:3B:00.0: GPU requires reset'),
    ('faulty_gpu', "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."),
    ('gpu_hbm3_memory', 'dcgm: GPU 1 volatile double-bit ECC errors: 2'),
    ('gpu_hbm3_memory', 'nvidia-smi -q: ECC Errors: Volatile: Double Bit: Device Memory: 2'),
    ('gpu_hbm3_memory', 'nvidia-smi -q: DRAM Uncorrectable : 2'),
    ('gpu_hbm3_memory', '        Pending                           : Yes'),
    ('gpu_hbm3_memory', 'probe host=n1 gpu=4 row remapping failure on bank 3'),
    ('gpu_hbm3_memory', 'dcgm: DCGM_FR_PENDING_ROW_REMAP GPU 2 has pending row remaps'),
    ('gpu_hbm3_memory', 'probe host=n1 gpu=4 HBM3 stack 2 uncorrectable error'),
    ('gpu_hbm3_memory', 'probe host=n1 gpu=4 retired pages limit exceeded: 64'),
    ('gpu_hbm3_memory', '[rank3]: RuntimeError: CUDA error: uncorrectable ECC error encountered'),
    ('gpu_sram_memory', 'probe host=n1 gpu=1 parity error in SRAM of L2 slice 3'),
    ('gpu_sram_memory', 'dcgm: DCGM_FR_SRAM_THRESHOLD GPU 1'),
    ('gpu_sram_memory', 'gpu-health: GPU 4 SRAM ECC errors exceed threshold'),
    ('gpu_system_processor', 'kernel: NVRM: GPU2 GSP RPC timeout: rpcSendMessage failed with status 0x65'),
    ('gpu_system_processor', 'kernel: NVRM: Timeout after 45s of waiting for RPC response from GPU1 GSP! Expected function 10 (FREE)'),
    ('gpu_thermal_interface_sensor', 'nvidia-smi --query-gpu=clocks_event_reasons.hw_thermal_slowdown: Active'),
    ('gpu_thermal_interface_sensor', 'gpu-health: GPU 3 is in HW thermal slowdown'),
    ('gpu_thermal_interface_sensor', 'kernel: NVRM: GPU at PCI:0000:3b:00: HBM over-temperature detected'),
    ('gpu_thermal_interface_sensor', 'dcgm: DCGM_FR_TEMP_VIOLATION GPU 3 temperature violation for 5400 ms'),
    ('gpu_thermal_interface_sensor', 'bmc: GPU2 temperature reading 255 C is out of range'),
    ('gpu_thermal_interface_sensor', '        HW Slowdown                       : Active'),
    ('gpu_thermal_interface_sensor', 'gpu-health: GPU temperature 97 C exceeds the slowdown threshold'),
    ('gpu_thermal_interface_sensor', '        GPU Current Temp                  : N/A'),
    ('silent_data_corruption', 'sdc-check: SDC confirmed on host n1 GPU 3'),
    ('silent_data_corruption', 'validator: checksum mismatch in gradients at step 100'),
    ('silent_data_corruption', 'validator: loss on replica 5 diverged from the others'),
    ('silent_data_corruption', 'validator: SDC detected on GPU 2'),
    ('silent_data_corruption', 'validator: silent data corruption suspected on GPU2'),
    ('system_memory', 'kernel: EDAC skx MC2: uncorrectable error on DIMM 1'),
    ('system_memory', 'redfish: DIMM P1-DIMMA1 status Critical: failed'),
    ('system_memory', 'kernel: mce: [Hardware Error]: Machine check events logged: Memory read error'),
    ('system_memory', 'kernel: EDAC skx MC2: HANDLING MCE MEMORY ERROR'),
    ('cpu', 'kernel: mce: [Hardware Error]: Machine Check: 0 Bank 5: be00000000800400'),
    ('cpu', 'kernel: CPU12: internal parity error'),
    ('cpu', 'kernel: mce: [Hardware Error]: Machine check: Processor context corrupt'),
    ('cpu', 'kernel: Kernel panic - not syncing: Fatal machine check'),
    ('ssd', 'kernel: XFS (nvme0n1p1): metadata I/O error in "xfs_trans_read_buf_map" at daddr 0x2 len 1 error 5'),
    ('ssd', 'smartctl: Critical Warning: 0x04'),
    ('ssd', 'smartctl: Available Spare: 2% (below threshold)'),
    ('ssd', 'smartctl: SMART overall-health self-assessment test result: FAILED!'),
    ('ssd', 'smartctl: Media and Data Integrity Errors: 12'),
    ('ssd', 'kernel: md/raid1:md0: Disk failure on nvme1n1, disabling device.'),
    ('ssd', 'kernel: EXT4-fs (nvme0n1p1): Remounting filesystem read-only on nvme0n1p1'),
    ('ssd', 'probe host=n1: NVMe SSD /dev/nvme1 offline'),
    ('ssd', 'kernel: nvme nvme0: I/O 123 QID 4 timeout, aborting'),
    ('power_supply', 'redfish: PowerSupply2 Status Health=Critical'),
    ('power_supply', 'bmc: AC power lost on PS1'),
    ('power_supply', 'bmc: power loss detected at 04:11:58'),
    ('server_chassis', 'bmc: drive backplane BP1 fault'),
    ('server_chassis', 'redfish: System board SB_STATUS critical'),
    ('server_chassis', 'bmc: chassis fault LED on'),
    ('io_expansion_board', 'bmc: IO expansion module 2 not detected'),
    ('io_expansion_board', 'kernel: pcieport 0000:5c:00.0: PCIe Bridge AER: Uncorrected (Non-Fatal) error received'),
    ('io_expansion_board', 'bmc: IOB2 fault'),
    ('io_expansion_board', 'kernel: pcieport 0000:16:02.0: pciehp: Slot(3): Link Down'),
    ('nic', 'bmc: ConnectX-7 HCA not responding'),
    ('nic', 'dcgm: DCGM_FR_CONNECTX_HEALTH mlx5_2'),
    ('nic', 'n1:3:4 [0] NCCL WARN Call to ibv_create_qp failed with error Cannot allocate memory'),
    ('nic', 'n1:3:4 [0] NCCL WARN NET/IB : Unable to open device mlx5_3'),
    ('nic', 'kernel: NETDEV WATCHDOG: ib0 (mlx5_core): transmit queue 3 timed out'),
    ('network_switch_cable', 'ufm: leaf-sw-23 port 17 state changed to DOWN'),
    ('network_switch_cable', 'switchd: link flapping detected on swp12'),
    ('network_switch_cable', 'switchd: Ethernet48 rx_los asserted'),
    ('network_switch_cable', 'opensm: Subnet Manager lost on fabric 1'),
    ('network_switch_cable', 'n1:3:4 [0] NCCL WARN NET/IB : transport retry counter exceeded'),
    ('network_switch_cable', 'n1:3:4 [0] NCCL WARN NET/IB : Got completion from peer 10.4.2.17<41234> with error 12, opcode 0, len 0, vendor err 129'),
    ('network_switch_cable', '[rank3]: ibv_poll_cq: IBV_WC_RETRY_EXC_ERR'),
    ('network_switch_cable', 'n1:3:4 [0] NCCL WARN NET/IB : remote access error'),
    ('host_maintenance', 'ops-bot: node-17 cordoned for firmware'),
    ('host_maintenance', 'slurmctld: node n1 Reason=kernel patch [ops]'),
    ('host_maintenance', 'ops: kernel upgrade to 6.8.0-51, rebooting'),
    ('host_maintenance', 'cloud: host is being migrated for maintenance'),
    ('host_maintenance', 'cloud: live migration of instance started'),
    ('host_maintenance', 'unattended-upgrades: Automatic reboot required'),
    ('host_maintenance', 'shutdown: The system is going down for reboot NOW!'),
    ('host_maintenance', 'systemd[1]: Reached target System Reboot.'),
    ('host_maintenance', 'kernel: reboot: Restarting system'),
    ('host_maintenance', 'systemd-logind[1]: System is rebooting.'),
    ('dependency', 'kernel: NFS: server fs01 not responding, timed out'),
    ('dependency', 'kernel: Lustre: lustre-OST0001-osc: Connection to lustre-OST0001 (at 10.0.0.5@o2ib) was lost'),
    ('dependency', 'mmfs: GPFS filesystem gpfs0 unmounted: expelled from cluster'),
    ('dependency', '[rank0]: checkpoint upload to object store timed out after 900 s'),
    ('dependency', '[rank0]: HTTP 503 Service Unavailable from storage endpoint'),
    ('dependency', 'botocore.exceptions.EndpointConnectionError: Could not connect to the endpoint URL: "https://s3.amazonaws.com/"'),
    ('dependency', 'kubelet: Failed to pull image "registry/trainer:v3": rpc error'),
    ('dependency', 'sbatch: error: Unable to contact slurm controller (connect failure)'),
    ('dependency', '[rank0]: socket.gaierror: [Errno -2] Name or service not known'),
    ('dependency', 'dig: status: NXDOMAIN'),
    ('dependency', 'curl: (6) Could not resolve host: artifacts.internal'),
    ('dependency', 'kubelet: Back-off pulling image: ImagePullBackOff'),
    ('dependency', 'docker: Error response from daemon: manifest for trainer:v3 unknown'),
    ('dependency', 'docker: Error response from daemon: pull access denied for trainer'),
    ('dependency', '[rank0]: OSError: No space left on device'),
    ('dependency', '[rank0]: OSError: [Errno 28] write failed'),
    ('dependency', '[rank0]: write failed: ENOSPC'),
    ('dependency', '[rank0]: OSError: [Errno 122] Disk quota exceeded'),
    ('dependency', '[rank0]: OSError: [Errno 116] Stale file handle'),
    ('dependency', "[rank0]: OSError: [Errno 107] Transport endpoint is not connected: '/mnt/ckpt'"),
    ('dependency', 'controller: crc mismatch reading ckpt step-00040000'),
    ('dependency', 'controller: resume: no committed checkpoint could be loaded'),
    ('dependency', 'controller: resume: checkpoint step-00040000 is corrupt'),
    ('dependency', '[rank0]: OSError: Input/output error'),
    ('dependency', '[rank0]: OSError: [Errno 5] read failed'),
    ('dependency', '[rank0]: read failed: EIO'),
    ('dependency', "[rank0]: OSError: [Errno 30] Read-only file system: '/mnt/ckpt/x'"),
    ('software_bug', 'kernel: oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),task=python,pid=4121,uid=1000'),
    ('software_bug', '[rank3]: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB'),
    ('software_bug', '[rank3]: torch.cuda.OutOfMemoryError: allocation failed'),
    ('software_bug', 'kubelet: container trainer terminated: Reason: OOMKilled'),
    ('software_bug', '[rank3]: grad_norm = nan at step 400'),
    ('software_bug', '[rank3]: non-finite loss at step 400, aborting'),
    ('software_bug', '[rank3]: invalid configuration: tp=3 does not divide 32 heads'),
    ('dependency', 'controller: resume: all 3 committed checkpoints could not be loaded'),
    ('software_bug', '[rank0]: OSError: libnccl-net.so: cannot open shared object file: No such file or directory'),
    ('software_bug', '[rank0]: python: symbol lookup error: /opt/lib/libflash.so: undefined symbol: _ZN3c104cuda9SetDeviceEi'),
    ('software_bug', 'nvidia-smi: Failed to initialize NVML: Driver/library version mismatch'),
    ('software_bug', '[rank0]: RuntimeError: The NVIDIA driver on your system is too old. CUDA driver version is insufficient for CUDA runtime version'),
    ('software_bug', '[rank0]: RuntimeError: CUDA error: device-side assert triggered'),
    ('software_bug', '[rank0]: RuntimeError: CUDA error: misaligned address'),
    ('software_bug', 'bash: line 1: 4121 Segmentation fault      python train.py'),
    ('software_bug', 'agent: rank 3 received SIGSEGV'),
    ('software_bug', 'bash: line 1: 4121 Illegal instruction     python train.py'),
    ('faulty_gpu', 'kernel: nvidia-nvswitch2: SXid (PCI:0000:07:00.0): 24007, Fatal, Link 44 sourcetrack timeout error (First)'),
    ('ssd', 'kernel: nvme0n1: I/O Cmd(0x2) @ LBA 7166016, 8 blocks, I/O Error (sct 0x2 / sc 0x81) MORE DNR'),
    ('ssd', '  e1 | 03/20/2026 | 04:11:00 | Drive Slot / Bay #0x20 | Drive Fault | Asserted'),
    ('nccl_watchdog_timeout', '[rank3]: WorkNCCL(SeqNum=8, OpType=ALLREDUCE) ran for 600011 milliseconds before timing out.'),
    ('nccl_watchdog_timeout', 'n1:3:4 [0] NCCL WARN Bootstrap : timed out waiting for the root'),
    ('nccl_watchdog_timeout', '[rank3]: NCCL timeout in allreduce after 1800 s'),
    ('nccl_watchdog_timeout', '[rank3]: Some NCCL operations have failed or timed out. Due to the asynchronous nature of CUDA kernels, subsequent GPU operations might run on corrupted/incomplete data.'),
    ('nccl_watchdog_timeout', 'torch.distributed.DistStoreError: Timed out after 901 seconds waiting for clients. 1/2 clients joined.'),
    ('nccl_watchdog_timeout', '[rank3]: collective ALLREDUCE seq 8812 did not complete within 1800 s'),
    ('nccl_watchdog_timeout', '[rank3]: Timeout at NCCL work: 1234, last enqueued NCCL work: 1235, last completed NCCL work: 1233.'),
    ('nccl_watchdog_timeout', '[rank4]: torch.distributed.DistBackendError: NCCL communicator was aborted on rank 4. Original reason for failure was: [Rank 4] Watchdog caught collective operation timeout'),
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
    'kernel: nvidia-nvswitch2: SXid (PCI:0000:07:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)',
    '            SRAM Uncorrectable SEC-DED    : 0',
    '            SRAM Uncorrectable Parity     : 0',
    'probe host=n1 gpu=2 sram.uncorrectable.parity=0 dram.uncorrectable=0 xid79.events=0',
    "dcgm: GPU 2 HBM single-bit ECC error count 120",
    "edac-util: mc0: 0 Uncorrected Errors with no DIMM info",
    "nvidia-smi: row remapping pending: No",
    "probe host=n1 mlx5_0: no link down detected since boot",
    'rasdaemon: mce_record: Corrected memory read error on DIMM_A1 (channel 1)',
    'controller: planned stop requested by alice: host drained for maintenance',
    'ops: job cancelled by user alice before the host was drained for a kernel update',
    'preflight host=n1 GPU burn-in: PASSED (0 of 8 GPUs failed, no miscompare)',
    'preflight host=n1 GPU burn-in finished: 0 of 8 GPUs failed',
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


def test_a_link_that_came_back_is_still_a_flap() -> None:
    text = ("Mar 14 02:00:01 node-17 kernel: mlx5_core 0000:0c:00.0 ibp12s0: Link down\n"
            "Mar 14 02:00:03 node-17 kernel: mlx5_core 0000:0c:00.0 ibp12s0: Link up, link restored\n")
    assert classify(text).category == "network_switch_cable"


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


def test_nan_on_every_replica_is_software_but_on_one_confirmed_replica_is_sdc() -> None:
    assert classify("[rank0]: ValueError: loss is nan at step 41200 on every replica; rolling back\n").category == "software_bug"
    one = ("2026-03-12T20:10:00Z [rank14] host=gpu-b05: loss is nan at step 31800 while the other replicas are finite\n"
           "2026-03-12T20:10:40Z sdc-check: replay of step 31800 on another host (gpu-b09) matches the other replicas\n")
    v = classify(one)
    assert (v.category, v.hosts) == ("silent_data_corruption", ("gpu-b05",))


# --- DESIGN.md rule 4: hosts only from host fields ---------------------------------------------------------
XID_ROWS = [(74, "faulty_gpu"), *((c, "faulty_gpu") for c in range(144, 151)), (61, "faulty_gpu"), (62, "faulty_gpu"),
            (154, "faulty_gpu"), (48, "gpu_hbm3_memory"), (63, "gpu_hbm3_memory"), (64, "gpu_hbm3_memory"),
            (94, "gpu_hbm3_memory"), (95, "gpu_hbm3_memory"), (140, "gpu_hbm3_memory"), (119, "gpu_system_processor"),
            (120, "gpu_system_processor"), (13, "software_bug"), (31, "software_bug"), (43, "software_bug"), (92, "unknown")]


@pytest.mark.parametrize(("code", "category"), XID_ROWS)
def test_xid_code_alone(code: int, category: str) -> None:
    """NVIDIA's Xid catalog, code by code, as a health probe reports it (no description to lean on)."""
    assert classify(f"gpu-health host=n1: GPU 2 reported Xid {code}\n").category == category


def test_same_moment_refinements() -> None:
    nic = ("Mar 15 06:30:10 n1 kernel: mlx5_core 0000:0c:00.0 ibp12s0: Link down\n"
           "Mar 15 06:30:10 n1 kernel: mlx5_core 0000:0c:00.0: poll_health:801:(pid 0): Fatal error 1 detected\n")
    assert classify(nic).category == "nic"
    board = ("Mar 21 09:00:14 n1 kernel: mlx5_core 0000:0c:00.0: firmware fatal error, PCI device removed\n"
             "Mar 21 09:00:14 n1 kernel: pcieport 0000:0a:00.0: PCIe switch downstream port error: link down\n")
    assert classify(board).category == "io_expansion_board"


@pytest.mark.parametrize(("line", "host"), [
    ("Mar  3 04:12:01 node-17 kernel: NVRM: Xid (PCI:0000:86:00): 79, pid=0, GPU has fallen off the bus.", "node-17"),
    ("2026-03-03T04:12:01.123456+00:00 gpu-a17 kernel: mce: [Hardware Error]: CPU 3: Machine Check", "gpu-a17"),
    ("probe host=trn-2231 gpu=1 ecc.volatile.sram.uncorrected=3", "trn-2231"),
    ('{"hostname": "h100-r7-n03", "msg": "Xid 79"}', "h100-r7-n03"),
    ("trn-2233:812:1044 [3] NCCL WARN NET/IB : Got completion from peer with status=12", "trn-2233"),
    ("(RankWorker pid=1234, ip=10.0.3.7) [rank2]: Watchdog caught collective operation timeout", "10.0.3.7"),
    ("(raylet, ip=10.0.0.3) [2026-03-03 04:12:01,123 E 1 1] node_manager.cc:1: worker died", "10.0.0.3"),
    ('{"node_ip_address": "10.1.2.3", "msg": "mlx5 link down"}', "10.1.2.3"),
    ("kubelet: nodeName: gpu-a17 pod trainer-3 OOMKilled", "gpu-a17"),
    ("ray: worker died on the node with resources {'node:10.0.0.5': 1.0, 'GPU': 8.0}", "10.0.0.5"),
    ("kubelet: ray.io/node-name=gpu-a21 pod evicted", "gpu-a21"),
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


# --- zero counts and possible causes inside longer lines (DESIGN.md rule 3) --------------------------------
# `nvidia-smi -q -d ECC` pads each field's name to a column; collectors prefix it with syslog or `host=` fields.
ECC_DUMP_ZERO = "\n".join(
    f"Jun  2 10:00:01 gpu-a17 gpu-health[311]:             {name:<30}: {value}" for name, value in (
        ("SRAM Correctable", 0), ("SRAM Uncorrectable Parity", 0), ("SRAM Uncorrectable SEC-DED", 0),
        ("DRAM Correctable", 4), ("DRAM Uncorrectable", 0), ("SRAM Threshold Exceeded", "No"), ("SRAM L2", 0),
        ("SRAM SM", 0))) + "\n"


@pytest.mark.parametrize("text", [
    ECC_DUMP_ZERO,
    "2026-06-02T10:00:01Z host=gpu-a17 epilog:     SRAM Uncorrectable Parity     : 0\n",
    "2026-06-02T10:00:01Z host=gpu-a17 epilog: GPU 3 SRAM Uncorrectable Parity 0, SRAM Uncorrectable SEC-DED 0, "
    "DRAM Uncorrectable 0\n",
    "2026-06-02T10:00:01Z host=gpu-a17 dcgm: GPU 2 SRAM Uncorrectable SEC-DED (volatile) 0\n",
    "Jun  2 10:00:01 gpu-a17 gpu-health[311]: GPU 2 volatile single-bit ECC count 5 (corrected), double-bit 0\n",
    "Jun  2 10:00:01 gpu-a17 dcgm[700]: GPU 2 HBM single-bit ECC error count 120 (corrected), double-bit ECC error "
    "count 0\n",
    "Jun  2 10:00:01 gpu-a17 gpu-health[311]:             SRAM Threshold Exceeded       : 0\n",
    "SRAM Threshold Exceeded: 0\n",
    # Ray's stock text after a worker's connection is lost lists what might have happened, not what did.
    "(raylet, ip=10.0.3.7) The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR "
    "Worker exit detail: Worker unexpectedly exits with a connection error code 2. End of file. There are some potential "
    "root causes. (1) The process is killed by SIGKILL by OOM killer due to high memory usage. (2) ray stop --force is "
    "called. (3) The worker is crashed unexpectedly due to SIGSEGV or other unexpected errors.\n",
    # strerror(EINVAL) after an errno is the OS's word for a refused call, not a bad configuration.
    "[rank0]: torch.distributed.DistNetworkError: The client socket has failed to connect to any network address of "
    "(rdzv-0.svc, 29400). The client socket has failed to connect to rdzv-0.svc:29400 (errno: 22 - Invalid argument).\n",
    "[rank0]: OSError: [Errno 22] Invalid argument: '/dev/shm/torch_1234'\n",
    "Jan  5 06:30:02 n1 kubelet[2001]: Shutdown manager detected shutdown cancellation\n",
    "Jun 10 17:20:11 n1 ipmi-sel[800]:  77c | 06/10/2026 | 17:25:10 | Module / Board #0x2f | Transition to OK | Asserted\n",
    "2026-04-11 17:08:15,443 INFO [host=gpu-c07-14] burnin:    GPU 5: OK\n",
])
def test_zero_counts_and_possible_causes_never_decide(text: str) -> None:
    v = classify(text)
    assert v.category == "unknown", v.explanation


def test_a_count_that_rose_from_zero_still_decides() -> None:
    v = classify("Jun  2 10:00:01 gpu-a17 nvml-watch[1401]: GPU 4 (00000000:9A:00.0): SRAM Uncorrectable SEC-DED "
                 "volatile 0 -> 2\n")
    assert (v.category, v.hosts) == ("gpu_sram_memory", ("gpu-a17",))


def test_a_zero_sram_count_beside_a_dram_error_does_not_make_it_sram() -> None:
    text = ECC_DUMP_ZERO.replace("DRAM Uncorrectable            : 0", "DRAM Uncorrectable            : 1")
    assert text != ECC_DUMP_ZERO
    assert classify(text).category == "gpu_hbm3_memory"


# --- Xid 94/95: where the ECC error was is named on another line (NVIDIA's Xid catalog, NVML counters) -------
XID94 = "Jun  2 10:00:00 gpu-a17 kernel: NVRM: Xid (PCI:0000:9a:00): 94, pid=5510, name=python, Contained: SM (0x1). " \
        "RST: No, D-RST: No\n"
XID95 = "Jun  2 10:00:00 gpu-a17 kernel: NVRM: Xid (PCI:0000:9a:00): 95, pid=5510, name=python, Uncontained: LTC TAG " \
        "(0x2,0x0). RST: Yes, D-RST: No\n"
CUDA_ECC = "Jun  2 10:00:00 gpu-a17 python[5510]: RuntimeError: CUDA error: uncorrectable ECC error encountered\n"


@pytest.mark.parametrize(("text", "category"), [
    (XID94 + CUDA_ECC + "Jun  2 10:00:40 gpu-a17 gpu-health[311]: GPU 00000000:9A:00.0 Volatile SRAM Uncorrectable "
     "SEC-DED : 1\n", "gpu_sram_memory"),
    (XID95 + ECC_DUMP_ZERO.replace("SRAM Uncorrectable Parity     : 0", "SRAM Uncorrectable Parity     : 1"),
     "gpu_sram_memory"),
    (XID94 + "Jun  2 10:00:41 gpu-a17 dcgm[700]: gpu=3 nvmlDeviceGetMemoryErrorCounter(UNCORRECTED, VOLATILE, "
     "SRAM) = 1\n", "gpu_sram_memory"),
    # the location is a DRAM row: HBM, whatever else the dump says
    (XID94 + ECC_DUMP_ZERO.replace("DRAM Uncorrectable            : 0", "DRAM Uncorrectable            : 1"),
     "gpu_hbm3_memory"),
    (XID94 + "Jun  2 10:00:00 gpu-a17 kernel: NVRM: Xid (PCI:0000:9a:00): 63, pid=5510, name=python, Row Remapper: "
     "New row (0x1f0a80) marked for remapping, reset gpu to activate.\n" + ECC_DUMP_ZERO, "gpu_hbm3_memory"),
    # an SRAM error on another host or on another GPU of this host says nothing about this Xid
    (XID94 + "Jun  2 10:00:40 gpu-b05 gpu-health[311]: GPU 00000000:9A:00.0 Volatile SRAM Uncorrectable "
     "SEC-DED : 1\n", "gpu_hbm3_memory"),
    (XID94 + "Jun  2 10:00:40 gpu-a17 gpu-health[311]: GPU 00000000:1B:00.0 Volatile SRAM Uncorrectable "
     "SEC-DED : 1\n", "gpu_hbm3_memory"),
    (XID94 + ECC_DUMP_ZERO, "gpu_hbm3_memory"),
])
def test_xid_94_95_take_the_location_named_on_the_same_gpu(text: str, category: str) -> None:
    v = classify(text)
    assert (v.category, v.hosts[0]) == (category, "gpu-a17"), v.explanation
    assert v.cordon


# --- real wording of sources the rules did not know ---------------------------------------------------------
@pytest.mark.parametrize(("category", "line"), [
    # gpu-burn's summary: `\tGPU %d: %s\n` with FAULTY or OK
    ("faulty_gpu", "2026-04-11 17:08:15,443 INFO [host=gpu-c07-14] burnin:    GPU 5: FAULTY"),
    # the kubelet's graceful node shutdown (NodeShutdown event, nodeshutdown_manager log); systemd and the kernel
    ("host_maintenance", "2026-01-05T06:30:02Z k8s-events Normal  NodeShutdown  node/trn-h4-02  Shutdown manager "
                         "detected shutdown event"),
    ("host_maintenance", '2026-01-05T06:30:02Z host=trn-h4-02 kubelet: I0105 06:30:02.118221 2001 '
                         'nodeshutdown_manager_linux.go:375] "Shutdown manager killing pod with gracePeriod" '
                         'pod="llm/pretrain-w-18" gracePeriod=30'),
    ("host_maintenance", "Jan  5 06:30:02 trn-h4-02 systemd-logind[812]: System is powering down."),
    ("host_maintenance", "Jan  5 06:30:40 trn-h4-02 kernel: reboot: Power down"),
    # ipmitool SEL: a Module / Board sensor (IPMI sensor type 15h) in a critical state
    ("server_chassis", " 77a | 06/10/2026 | 17:20:10 | Module / Board #0x2f | Transition to Critical from less "
                       "severe | Asserted"),
    ("server_chassis", " 77b | 06/10/2026 | 17:20:10 | Module/Board BP0_TEMP | Upper Non-recoverable going high | "
                       "Asserted"),
])
def test_source_wording(category: str, line: str) -> None:
    assert classify(line + "\n").category == category


def test_a_backplane_sensor_gone_critical_before_its_drives_drop_is_the_chassis() -> None:
    text = ("Jun 10 17:20:10 hgx-9402 ipmi-sel[800]:  77a | 06/10/2026 | 17:20:10 | Module / Board #0x2f | "
            "Transition to Non-recoverable from less severe | Asserted\n"
            "Jun 10 17:20:12 hgx-9402 kernel: nvme nvme0: controller is down; will reset: CSTS=0xffffffff\n"
            "Jun 10 17:20:12 hgx-9402 kernel: nvme nvme1: controller is down; will reset: CSTS=0xffffffff\n")
    assert classify(text).category == "server_chassis"


def test_a_node_shutdown_is_what_is_left_but_a_power_fault_before_it_wins() -> None:
    shutdown = "Jan  5 06:30:02 n1 kubelet[2001]: Shutdown manager detected shutdown event\n"
    v = classify(shutdown)
    assert (v.category, v.hosts, v.cordon) == ("host_maintenance", ("n1",), False)
    psu = "  5a | 01/05/2026 | 06:29:58 | Power Supply #0x51 | Power Supply AC lost | Asserted\n"
    assert classify(psu + shutdown).category == "power_supply"


def test_the_dns_failure_after_an_einval_is_the_dependency() -> None:
    text = ("Dec 20 17:40:05 n1 torchrun[2201]: torch.distributed.DistNetworkError: The client socket has failed to "
            "connect to rdzv-0.svc:29400 (errno: 22 - Invalid argument).\n"
            "Dec 20 17:40:06 n2 torchrun[2190]: socket.gaierror: [Errno -3] Temporary failure in name resolution\n")
    assert classify(text).category == "dependency"
    assert classify("ValueError: invalid argument --tp-size=3 for 8 GPUs\n").category == "software_bug"


# --- a replica's value != the others', and the replay that agrees with them --------------------------------
DISAGREES = "2026-03-01T10:00:00Z host=gpu-b05 sdc-check: step 4000 dp_rank=5 param checksum 0x9f0e11aa != " \
            "majority 0x1c2d3e4f\n"


def test_a_checksum_unequal_to_the_majority_is_a_suspect_replica() -> None:
    v = classify(DISAGREES)
    assert (v.category, v.hosts, v.cordon) == ("silent_data_corruption", ("gpu-b05",), False)
    ckpt = "controller: checkpoint shard __3_0.distcp sha256 9c1e0a77 != manifest 41ab0c12\n"
    assert classify(ckpt).category != "silent_data_corruption"


@pytest.mark.parametrize("replay", [
    "2026-03-01T10:02:00Z host=gpu-b09 sdc-replay: step 4000 dp_rank=5 replayed: checksum 0x1c2d3e4f agrees with the "
    "majority",
    "2026-03-01T10:02:00Z host=gpu-b09 sdc-replay: recomputed step 4000 of dp_rank=5: loss 1.9874 == reference",
    "2026-03-01T10:02:00Z host=gpu-b09 sdc-replay: step 4000 of dp_rank=5 re-run on a spare: result matches dp_rank=4",
    "2026-03-01T10:02:00Z host=gpu-b09 sdc: dp_rank=5 diverged; replay on other hardware agrees with the rest",
])
def test_a_replay_that_agrees_confirms_and_names_the_replica_not_the_replay_host(replay: str) -> None:
    v = classify(DISAGREES + replay + "\n")
    assert (v.category, v.hosts[0], v.cordon) == ("silent_data_corruption", "gpu-b05", True), v.explanation
    assert "gpu-b09" not in v.hosts or "diverged" in replay


def test_a_replay_report_alone_names_no_host() -> None:
    v = classify("2026-03-01T10:02:00Z host=gpu-b09 sdc-replay: replay of dp_rank=5 agrees with the majority\n")
    assert (v.category, v.hosts) == ("silent_data_corruption", ())
    refuted = classify(DISAGREES + "2026-03-01T10:02:00Z host=gpu-b09 sdc-replay: replay of dp_rank=5 reproduces the "
                                   "mismatch\n")
    assert refuted.category != "silent_data_corruption"


# --- real host fields beyond syslog: journal JSON, pdsh, logging brackets, tables, Kubernetes, Slurm ---------
@pytest.mark.parametrize(("line", "host"), [
    # journalctl -o json
    ('{"__REALTIME_TIMESTAMP":"1764374400000000","_HOSTNAME":"gpu-a17","SYSLOG_IDENTIFIER":"kernel",'
     '"MESSAGE":"mce: [Hardware Error]: CPU 6: Machine Check Exception: 5 Bank 0: b2000000000b0005"}', "gpu-a17"),
    # pdsh -w gpu-a[16-17] 'nvidia-smi -q -d ROW_REMAPPER'
    ("gpu-a17:         Remapping Failure Occurred        : Yes", "gpu-a17"),
    # Python logging `%(asctime)s %(levelname)s [%(hostname)s] %(name)s: %(message)s`
    ("2026-03-03 04:12:01,003 WARNING [gpu-a17] dcgm: GPU 3 clock event reasons 0x48", "gpu-a17"),
    # a program tag holding the host, not a pid
    ("2026-03-03 04:12:01,771 ERROR kern[ip-10-0-3-17]: mlx5_core 0000:d6:00.0: Driver is in error state", "ip-10-0-3-17"),
    ("gce instance=a3-vm-0042 operation=compute.instances.hostMaintenance status=RUNNING", "a3-vm-0042"),
    ("2026-07-15T11:02:17Z k8s-events Normal NodeNotSchedulable node/gpu-c02-33 Node gpu-c02-33 status is now: "
     "NodeNotSchedulable", "gpu-c02-33"),
    ("[2026-10-12T14:00:00.102] _slurm_rpc_reboot_nodes: reboot request from uid=0 for nodes node-1804", "node-1804"),
    ("[2026-10-12T14:00:00.103] update_node: node node-1804 state set to REBOOT_ISSUED", "node-1804"),
    # never from words, paths, facilities, devices, ranks, pids or logger names
    ("mce: [Hardware Error]: CPU 3: Machine Check Exception: 5 Bank 0", None),
    ("nvme0n1: I/O Error, dev nvme0n1, sector 4096", None),
    ("ata1.00: failed command: READ FPDMA QUEUED", None),
    ("k8s-device-plugin: registered device plugin for nvidia.com/gpu", None),
    ("2026-03-03 04:12:01,003 INFO [rank0] trainer: step 5 loss 2.1", None),
    ("2026-03-03 04:12:01,003 INFO [torch.distributed] c10d: rendezvous complete", None),
    ("2026-03-03 04:12:01,003 INFO [Thread-12] loader: prefetch", None),
    ("python3[8810]: step 5", None),
    ("trainer: loading /mnt/ckpt/node/gpu-a17/step_100", None),
])
def test_real_host_fields(line: str, host: str | None) -> None:
    assert host_of(line) == host


def test_a_table_names_the_host_of_each_row_and_reads_its_counts() -> None:
    scan = ("oncall: xid-scan --since 09:00 --format csv\n"
            "hostname,gpu_bus_id,xid_79,xid_74,xid_92\n"
            "gpu-h02-r09,00000000:1B:00.0,0,0,3\n"
            "gpu-h02-r11,00000000:9B:00.0,1,0,0\n")
    v = classify(scan)
    assert (v.category, v.hosts, 79 in v.xids) == ("faulty_gpu", ("gpu-h02-r11",), True)
    assert classify(scan.replace(",1,0,0\n", ",0,0,0\n")).category == "unknown"
    pipes = classify("| host | xid_79 | xid_48 |\n|---|---|---|\n| gpu-b05 | 0 | 1 |\n")
    assert (pipes.category, pipes.hosts) == ("gpu_hbm3_memory", ("gpu-b05",))


def test_journal_json_is_read_in_its_own_time_order() -> None:
    xid = ('{"__REALTIME_TIMESTAMP":"1764374405000000","_HOSTNAME":"gpu-a17","MESSAGE":"NVRM: Xid (PCI:0000:3b:00): '
           '79, pid=1, GPU has fallen off the bus."}\n')
    timeout = ('{"__REALTIME_TIMESTAMP":"1764374401000000","_HOSTNAME":"gpu-a09","MESSAGE":"[rank8] Watchdog caught '
               'collective operation timeout: WorkNCCL(SeqNum=5, OpType=ALLREDUCE) ran for 600087 milliseconds before '
               'timing out."}\n')
    assert classify(xid + timeout).category == "nccl_watchdog_timeout"
    v = classify(xid)
    assert (v.category, v.hosts) == ("faulty_gpu", ("gpu-a17",))


# --- a healthy status names no fault (issue 10) ------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "prolog: bmc: IO expansion board status OK; power supply redundancy OK; chassis intrusion: not detected",
    "bmc host=gpu-a17: PCIe switch PEX0: OK, retimer RT2 health: Healthy",
    "bmc: PSU fault status: OK; fan failure status OK",
    "gpu-check: NVLink error check passed on all 18 links",
    "nhc: SMART overall-health self-assessment test result: PASSED (nvme0..nvme7)",
    "health-agent: | PCIe | Pass |",
    "ipmitool sdr: Fan FAN_SYS3 | 7800 RPM | ok",
])
def test_a_healthy_status_never_decides(text: str) -> None:
    assert classify(text + "\n").category == "unknown"


@pytest.mark.parametrize(("category", "line"), [
    ("io_expansion_board", "bmc: IO expansion board IOB1 not detected"),
    ("server_chassis", "  1a | 11/20/2026 | 22:00:01 | Physical Security | General Chassis intrusion | Asserted"),
    ("software_bug", "RuntimeError: CUDA error: an illegal memory access was encountered in the forward pass"),
    ("software_bug", "RuntimeError: CUDA error: an illegal memory access was encountered; status: not OK"),
])
def test_a_fault_beside_status_words_still_decides(category: str, line: str) -> None:
    assert classify(line + "\n").category == category


def test_a_per_gpu_zero_after_a_counter_name_is_a_zero() -> None:
    line = "health-agent: ECC SBE volatile GPU1=41 (corrected), DBE volatile GPU1=0; no action\n"
    assert classify(line).category == "unknown"
    assert classify(line.replace("GPU1=0", "GPU1=2")).category == "gpu_hbm3_memory"


# --- APEI/GHES firmware-first records (drivers/firmware/efi/cper.c wording) ---------------------------------
GHES = ("2026-11-27T09:30:00.101Z r3-gpu-11 kernel: {2}[Hardware Error]: Hardware error from APEI Generic Hardware "
        "Error Source: 1\n"
        "2026-11-27T09:30:00.101Z r3-gpu-11 kernel: {2}[Hardware Error]: event severity: fatal\n"
        "2026-11-27T09:30:00.101Z r3-gpu-11 kernel: {2}[Hardware Error]:  Error 0, type: fatal\n"
        "2026-11-27T09:30:00.101Z r3-gpu-11 kernel: {2}[Hardware Error]:   section_type: general processor error\n"
        "2026-11-27T09:30:00.102Z r3-gpu-11 kernel: Kernel panic - not syncing: Fatal hardware error!\n")


def test_a_fatal_ghes_processor_record_is_the_cpu_and_a_corrected_one_never_decides() -> None:
    v = classify(GHES)
    assert (v.category, v.hosts) == ("cpu", ("r3-gpu-11",))
    memory = GHES.replace("general processor error", "memory error")
    assert classify(memory).category == "system_memory"
    corrected = GHES.replace("severity: fatal", "severity: corrected").replace("type: fatal", "type: corrected")
    assert classify("\n".join(corrected.splitlines()[:4]) + "\n").category == "unknown"
    assert classify("\n".join(memory.splitlines()[:4]).replace("fatal", "corrected") + "\n").category == "unknown"


# --- a recovered flap before a real fault is the warning it was -------------------------------------------
def test_a_recovered_link_flap_before_a_real_fault_does_not_decide() -> None:
    text = ("2026-11-11T04:02:51.330Z n07 kernel: mlx5_core 0000:3b:00.0 ibp59s0: Link down\n"
            "2026-11-11T04:02:53.014Z n07 kernel: mlx5_core 0000:3b:00.0 ibp59s0: Link up\n"
            "2026-11-11T04:02:55.200Z n07 netmon[2011]: ibp59s0 flap recovered after 1.7s, no job impact\n"
            "2026-11-11T04:31:09.711Z n42 kernel: NVRM: Xid (PCI:0000:5d:00): 79, pid=412210, name=python, GPU has "
            "fallen off the bus.\n")
    v = classify(text)
    assert (v.category, v.hosts) == ("faulty_gpu", ("n42",))
    assert classify("\n".join(text.splitlines()[:3]) + "\n").category == "network_switch_cable"


# --- the clock-event reasons bitmask (NVML nvmlClocksEventReasonHwThermalSlowdown = 0x40) ------------------
EXPORTER = ('DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{gpu="4",UUID="GPU-0c9d2e11",device="nvidia4",'
            'modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-k05-r07"} ')


@pytest.mark.parametrize(("line", "category"), [
    (EXPORTER + "64", "gpu_thermal_interface_sensor"),
    (EXPORTER + "96", "gpu_thermal_interface_sensor"),  # SW_THERMAL | HW_THERMAL
    (EXPORTER + "4", "unknown"),  # SW power cap
    (EXPORTER + "0", "unknown"),
    ("nvidia-smi --query-gpu=clocks_event_reasons.active: 0x0000000000000040", "gpu_thermal_interface_sensor"),
    ("nvidia-smi --query-gpu=clocks_event_reasons.active: 0x0000000000000001", "unknown"),
    ('DCGM_EXP_CLOCK_EVENTS_COUNT{gpu="0",Hostname="home",clock_event="hw_thermal",window_size_in_ms="300000"} 1',
     "gpu_thermal_interface_sensor"),
    ('DCGM_EXP_CLOCK_EVENTS_COUNT{gpu="0",Hostname="home",clock_event="hw_thermal",window_size_in_ms="300000"} 0',
     "unknown"),
])
def test_the_hw_thermal_bit_of_the_clock_event_reasons(line: str, category: str) -> None:
    v = classify(line + "\n")
    assert v.category == category
    if line.startswith("DCGM_FI") and category != "unknown":
        assert v.hosts == ("gpu-k05-r07",)


# --- wording the rules did not know ------------------------------------------------------------------------
@pytest.mark.parametrize(("category", "line"), [
    # mlx5e's TX timeout reporter (en_main.c / reporter_tx.c)
    ("nic", "Nov 20 08:30:11 c7-03 kernel: mlx5_core 0000:2c:00.0 ens3f0np0: TX timeout detected"),
    ("nic", "Nov 20 08:30:11 c7-03 kernel: mlx5_core 0000:2c:00.0 ens3f0np0: TX timeout on queue: 11, SQ: 0x10b3, "
            "CQ: 0x4c2, SQ Cons: 0x1a77 SQ Prod: 0x1a95, usecs since last trans: 14001000"),
    # Ray's memory monitor (raylet) and its worker-killed summary
    ("software_bug", "Worker exit type: SYSTEM_ERROR Worker exit detail: Task was killed due to the node running "
                     "low on memory."),
    ("software_bug", "Memory on the node (IP: 10.7.2.14, ID: 3c2d1e) where the task (actor ID: 8f3c, name=RankWorker."
                     "__init__, pid=88120, memory used=118.32GB) was running was 243.11GB / 251.52GB (0.966573), "
                     "which exceeds the memory usage threshold of 0.95."),
    ("software_bug", "(raylet) node_manager.cc:3277: 2 Workers (tasks / actors) killed due to memory pressure (OOM), "
                     "0 Workers crashed due to other reasons"),
    # kubectl drain/cordon output and the event a cordon raises
    ("host_maintenance", "node/gpu-a17 cordoned"),
    ("host_maintenance", "evicting pod llm/pretrain-worker-5"),
    ("host_maintenance", "2026-11-08T14:00:02Z event=Normal reason=NodeNotSchedulable msg=\"Node gpu-a17 status is "
                         "now: NodeNotSchedulable\""),
    ("host_maintenance", "event=Normal reason=Drain msg=\"drained by user ops-automation (ticket CHG-20411)\""),
    ("host_maintenance", "slurmd: node drained: reason=\"BIOS settings rollout\""),
    # Slurm's scontrol reboot: slurmctld's request and node state, slurmd running RebootProgram
    ("host_maintenance", "[2026-10-12T14:00:00.102] _slurm_rpc_reboot_nodes: reboot request from uid=0 for nodes "
                         "node-1804"),
    ("host_maintenance", "[2026-10-12T14:00:00.103] update_node: node node-1804 state set to REBOOT_ISSUED"),
    ("host_maintenance", "[2026-10-12T14:00:01.004] node-1804 slurmd[2101]: Node reboot request being processed"),
    ("host_maintenance", "oncall: scontrol reboot ASAP nextstate=RESUME node-1804"),
    # a power cycle asked of the BMC by a person or fleet tooling, not a PSU fault
    ("host_maintenance", "bmc-sel: 2c1 | 11/27/2026 | 10:11:58 | System Event | chassis power cycle requested by IPMI "
                         "user 'fleet-ops' via LAN | Asserted"),
    ("host_maintenance", "fleet-ops: remediation run RM-55102 power-cycled gpu-k09-r03"),
])
def test_more_source_wording(category: str, line: str) -> None:
    assert classify(line + "\n").category == category


@pytest.mark.parametrize("line", [
    "2026-11-08T14:00:05Z event=Warning reason=Evicted msg=\"The node was low on resource: memory.\"",
    "bmc-sel: 2c3 | 11/27/2026 | 10:11:59 | Power Supply PSU1_Status | Presence detected | Asserted",
    "nvidia-smi: GPU 0 clocks_event_reasons.active 0x0000000000000004 (SW Power Cap)",
])
def test_words_near_those_signatures_name_no_fault(line: str) -> None:
    assert classify(line + "\n").category == "unknown"


def test_a_tx_timeout_before_the_watchdog_is_the_nic() -> None:
    text = ("Nov 20 08:30:11 c7-03 kernel: mlx5_core 0000:2c:00.0 ens3f0np0: TX timeout detected\n"
            "Nov 20 08:30:34 c7-01 python3[8011]: [rank0]: Watchdog caught collective operation timeout: "
            "WorkNCCL(SeqNum=5) ran for 600087 milliseconds before timing out.\n")
    v = classify(text)
    assert (v.category, v.hosts) == ("nic", ("c7-03",))


# --- several drives lost at once: the backplane they share ------------------------------------------------
def test_several_drives_lost_at_once_are_the_backplane_but_one_is_the_drive() -> None:
    two = ("Nov 10 22:30:12 s15 kernel: nvme nvme2: controller is down; will reset: CSTS=0xffffffff, PCI_STATUS=0xffff\n"
           "Nov 10 22:30:12 s15 kernel: nvme nvme3: controller is down; will reset: CSTS=0xffffffff, PCI_STATUS=0xffff\n"
           "Nov 10 22:30:13 s15 kernel: md/raid0:md127: Disk failure on nvme2n1, disabling device.\n")
    v = classify(two)
    assert (v.category, v.hosts) == ("server_chassis", ("s15",))
    one = "\n".join(ln for ln in two.splitlines() if "nvme3" not in ln) + "\n"
    assert classify(one).category == "ssd"
    later = two.replace("Nov 10 22:30:12 s15 kernel: nvme nvme3", "Nov 10 22:39:12 s15 kernel: nvme nvme3")
    assert classify(later).category == "ssd"


# --- the replica a replay clears is traced to its own host -----------------------------------------------
@pytest.mark.parametrize("first", [
    "2026-11-27T01:20:00Z gpu-b05 sdc-guard: step=21120 replica=6 loss=2.1904 majority_loss=1.9977 agree=7/8",
    '{"ts":"2026-11-27T01:20:00Z","host":"gpu-b05","msg":"dp replica checksum","replica":6,"sha1":"4c9d1102"}',
])
def test_a_replay_report_names_the_host_of_the_replica_it_replayed(first: str) -> None:
    text = (first + "\n"
            "2026-11-27T01:20:01Z gpu-b01 sdc-guard: step=21120 replica 6 is the outlier\n"
            "2026-11-27T01:26:30Z gpu-b09 sdc-guard: replay step=21120 replica=6 loss=1.9977 agrees with majority\n")
    v = classify(text)
    assert (v.category, v.hosts[0]) == ("silent_data_corruption", "gpu-b05"), v.explanation
    assert "gpu-b09" not in v.hosts
    other = text.replace("replay step=21120 replica=6", "replay step=21120 replica=2")
    assert classify(other).hosts == ()


# --- host fields in the layouts on-call pastes use (heldout3's misses) ---------------------------------------
@pytest.mark.parametrize(("line", "host"), [
    # clush/pdsh output gathered as `[host] line`, here nvidia-smi -q's padded ECC field
    ("[hgx-07.dc2.example.net]             DRAM Uncorrectable                : 2", "hgx-07.dc2.example.net"),
    # Python logging `[%(asctime)s] [%(hostname)s] %(name)s:` and `%(asctime)s [%(hostname)s] %(name)s:`
    ("[2026-11-29 08:00:05] [hgx-h100-b2-17] health-agent: GPU 2 thermal sensor read failed", "hgx-h100-b2-17"),
    ("2026-11-29 02:00:00,000 [node-f-0033] bmc: SEL 0x77 | Add-in Card RISER2_Status | Riser card fault | Asserted",
     "node-f-0033"),
    ("2026-11-29 04:00:00 [node-e-0420] PSU2 Status      | 71h | ok  | 10.2 | Presence detected, Failure detected",
     "node-e-0420"),
    ("2026-11-29 05:40:02,003 [node-0117] kernel WARNING: NVRM: Xid (PCI:0000:3a:00): 43, pid=19001, name=python",
     "node-0117"),
    # `|`-separated export with the host column before the time column
    ("gpu-d11 | 2026-11-29 01:03:10 | INFO  | epilog  |             SRAM Uncorrectable SEC-DED        : 1", "gpu-d11"),
    # CSV and TSV rows without their header: the host column right after an ISO timestamp
    ('2026-11-29T12:05:02Z,ip-172-31-9-44,5,,,,"Xid 94 Contained: SM SRAM uncorrectable (0x1)."', "ip-172-31-9-44"),
    ("2026-11-29T05:00:03Z\tr12n07\tkernel\t-\tblk_update_request: critical medium error, dev nvme0n1", "r12n07"),
    # pdsh's `host: ` prefix in front of syslog (a name without a dash), with and without syslog's own host column
    ("r21n03: Nov 29 05:40:01 r21n03 kernel: NVRM: Xid (PCI:0000:63:00): 79, pid='<unknown>'", "r21n03"),
    ("r21n03: Nov 29 05:40:01 kernel: NVRM: Xid (PCI:0000:63:00): 79, pid='<unknown>'", "r21n03"),
    # an exporter's `host timestamp program:` layout
    ("node-d-1102 Nov 29 04:12:40 kernel: mlx5_core 0000:3b:00.0: poll_health:834:(pid 0): Fatal error 3 detected",
     "node-d-1102"),
    # Python logging's `%(levelname)s [%(hostname)s] %(name)s:` behind torchrun's `[rank3]:` line prefix
    ("[rank3]: WARNING [gpu-a17] dcgm: GPU 3 clock event reasons 0x48", "gpu-a17"),
    # RFC 5424: <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
    ("<3>1 2026-11-29T05:00:00.123Z gpu-a17 kernel - - - mlx5_core 0000:3b:00.0: Fatal error 3 detected", "gpu-a17"),
    # never a level, program, thread, rank, device, PCI address, GPU UUID, hex value, version, file, path or date
    ("Nov 29 04:12:40 kernel: NVRM: Xid (PCI:0000:63:00): 79, GPU has fallen off the bus.", None),
    ("2026-11-29 01:03:10 | ERROR | trainer | RuntimeError: CUDA error", None),
    ("2026-11-29T05:00:03Z\tk8s-device-plugin\tregistered\tnvidia.com/gpu", None),
    ("2026-11-29T05:00:03Z,mlx5_0,1,down", None),
    ("2026-11-29T05:00:03Z\tnvme0n1\tmedia_errors\t3", None),
    ("2026-11-29T05:00:03Z,GPU3,xid,79", None),
    ("2026-11-29T05:00:03Z,GPU-3b2a1c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d,79", None),
    ("2026-11-29T05:00:03Z,0000:3b:00.0,79", None),
    ("2026-11-29T05:00:03Z,rank12,loss,nan", None),
    ("2026-11-29T05:00:03Z,0x7e2b3310,MISMATCH", None),
    ("2026-11-29T05:00:03Z,2026-11-30,ok", None),
    ("2026-11-29T05:00:03Z,/mnt/ckpt/gpu-a17/step_100,ok", None),
    ("[2026-11-29 08:00:05] [v2.13.0] loader: ready", None),
    ("[2026-11-29 08:00:05] [llama3-8b.yaml] config: loaded", None),
    ("[2026-11-29 08:00:05] [Thread-12] loader: prefetch", None),
    ("[2026-11-29 08:00:05] [rank-3] trainer: step 5", None),
    ("[2026-11-29 08:00:05] [pool-1-thread-3] loader: prefetch", None),
    ("2026-11-29 01:00:00 | step-100 | loss 2.1", None),
])
def test_host_prefixes_and_columns_of_on_call_pastes(line: str, host: str | None) -> None:
    assert host_of(line) == host


def test_a_pdsh_prefix_keeps_the_syslog_time() -> None:
    """The timeout is earlier in time though later in the paste: read in time order, nothing names a cause first."""
    text = ("r21n03: Nov 29 05:40:01 r21n03 kernel: NVRM: Xid (PCI:0000:63:00): 79, pid=0, GPU has fallen off the bus.\n"
            "r21n05: Nov 29 05:30:00 r21n05 python[900]: [rank8] Watchdog caught collective operation timeout: "
            "WorkNCCL(SeqNum=5, OpType=ALLREDUCE) ran for 600087 milliseconds before timing out.\n")
    assert classify(text).category == "nccl_watchdog_timeout"
    assert classify(text.replace("05:30:00", "05:50:00")).hosts == ("r21n03",)


def test_csv_and_tsv_rows_keep_quoted_and_free_text_cells_whole() -> None:
    csv_text = ("time,hostname,port,state,symbol_errors,detail\n"
                "2026-11-29T05:00:00Z,hpc-gpu-106,mlx5_0/1,ok,0,\n"
                '2026-11-29T05:05:00Z,hpc-gpu-107,mlx5_0/1,retraining,9120,"link retraining 3 times in 60s; cable '
                'module high BER, replace cable"\n')
    v = classify(csv_text)
    assert (v.category, v.hosts) == ("network_switch_cable", ("hpc-gpu-107",)), v.explanation
    tsv = ("time\thost\tdevice\tnote\n"
           "2026-11-29T05:00:00Z\tr12n06\t/dev/nvme0\tok\n"
           "2026-11-29T05:00:03Z\tr12n07\tkernel\tblk_update_request: critical medium error, dev nvme0n1, sector 88112\n")
    v = classify(tsv)
    assert (v.category, v.hosts) == ("ssd", ("r12n07",)), v.explanation


def test_a_replay_row_in_a_table_names_the_replica_columns_host() -> None:
    tsv = ("time\thost\tstep\tdp_rank\tgrad_checksum\tstatus\n"
           "2026-11-29T04:10:00Z\tip-10-4-2-7\t9100\t0\t0x7e2b3310\tok\n"
           "2026-11-29T04:10:00Z\tip-10-4-2-9\t9100\t1\t0x7e2b3b10\tMISMATCH\n"
           "2026-11-29T04:25:00Z\tip-10-4-2-30\t9100\t1\t0x7e2b3310\treplay_agrees_with_majority\n")
    v = classify(tsv)
    assert (v.category, v.hosts[:1]) == ("silent_data_corruption", ("ip-10-4-2-9",)), v.explanation
    assert "ip-10-4-2-30" not in v.hosts


def test_a_replay_on_a_bracketed_host_names_the_replica_that_disagreed() -> None:
    text = ("[2026-11-29 03:00:00] [gpu-e15] sdc-guard: step 13000 loss 2.1934 on dp replica 2 vs 2.0512 on replicas "
            "0,1,3\n"
            "[2026-11-29 03:20:10] [gpu-e20] sdc-guard: replay of step 13000 replica 2 on gpu-e20: loss 2.0512 (agrees "
            "with replicas 0,1,3)\n")
    v = classify(text)
    assert (v.category, v.hosts) == ("silent_data_corruption", ("gpu-e15",)), v.explanation


@pytest.mark.parametrize(("text", "category"), [
    # dcgmi diag's result table (DCGM 3: `Fail - GPU: N` / `Fail - All`; DCGM 4: a `GPU0: Fail` row) after an Xid 43
    ("| Diagnostic                | Fail - GPU: 2                                  |", "faulty_gpu"),
    ("| Memory                    | Fail - All                                     |", "faulty_gpu"),
    ("|                           | GPU0: Fail                                     |", "faulty_gpu"),
    ("| Diagnostic                | Pass                                           |", "software_bug"),
    # kured's log lines (Kubernetes reboot daemon) for a pending kernel update
    ("kured: Reboot required", "host_maintenance"),
    ("kured: Draining node gke-train-a3-pool-5f2c-b7n4", "host_maintenance"),
    ('time="2026-11-29T02:00:40Z" level=info msg="Commanding reboot for node: gke-train-a3-pool-5f2c-b7n4"',
     "host_maintenance"),
    ("kured: Reboot not required", "software_bug"),
    # iDRAC's Redfish event SEC0031
    ('{"MessageId":"iDRAC.2.9.SEC0031","Severity":"Critical","Message":"The chassis is open while the power is on."}',
     "server_chassis"),
    ('{"MessageId":"iDRAC.2.9.SEC0032","Severity":"OK","Message":"The chassis is closed while the power is on."}',
     "software_bug"),
])
def test_on_call_wording_of_diag_tables_reboot_daemons_redfish_and_user_faults(text: str, category: str) -> None:
    """Each line after an Xid 43 on the same host (the application's, unless hardware evidence comes with it)."""
    xid43 = "2026-11-29 05:40:02,003 [node-0117] kernel WARNING: NVRM: Xid (PCI:0000:3a:00): 43, pid=19001, name=python\n"
    clean = "health-agent: mcelog --client: no machine check errors; edac-util: mc0: 0 Uncorrected Errors\n"
    v = classify(xid43 + "2026-11-29 05:46:51,443 [node-0117] epilog INFO: " + text + "\n" + clean)
    assert v.category == category, v.explanation
    assert v.hosts[:1] == ("node-0117",)


@pytest.mark.parametrize("line", [
    "Nov 29 06:30:00 ip-10-2-0-15 kernel: python[20112]: segfault at 18 ip 00007f9a2c1b3e41 sp 00007ffd1b2c3a00 "
    "error 4 in libtorch_cpu.so[7f9a27e00000+1c2a4000] likely on CPU 17 (core 1, socket 0)",
    "Nov 29 06:30:00 ip-10-2-0-15 kernel: traps: python[20111] general protection fault ip:7f9a2c1b3e41 "
    "sp:7ffe4b1d2a80 error:0 in libtorch_cpu.so[7f9a27e00000+1c2a4000]",
])
def test_a_user_process_fault_with_a_clean_machine_check_summary_is_software(line: str) -> None:
    clean = ("Nov 29 06:31:00 ip-10-2-0-15 health-agent: mcelog --client: no machine check errors; edac-util: mc0: "
             "0 Uncorrected Errors, 0 Corrected Errors\n")
    v = classify(line + "\n" + clean)
    assert v.category == "software_bug", v.explanation


def test_the_controllers_own_network_probes_name_the_network() -> None:
    """The reachability knock and the link probe's lines, as the controller's evidence renders them: the network
    (weak), so that a power loss the BMC names first still wins."""
    from health.link_probe import name_slow_link
    from health.observations import Finding, FindingKind
    from health.reachability import SILENT, lost_host_evidence
    from orchestrator.controller.evidence import probe_line

    silent = probe_line(lost_host_evidence("gpu-b07", "10.0.0.7", 6379, SILENT, True, 100.0, 12.0))
    alone = probe_line(lost_host_evidence("gpu-b07", "10.0.0.7", 6379, SILENT, False, 100.0, 12.0))
    hang = Finding(FindingKind.HANG, (0, 1), ("gpu-b01", "gpu-b07"), 10.0, 30.0, "no step completed", evidence={})
    named = name_slow_link(hang, {h: {"transfer_s": t, "rtt_s": 0.001, "error": None}
                                  for h, t in (("gpu-b01", 0.0004), ("gpu-b02", 0.006), ("gpu-b07", 3.9))},
                           {0: "gpu-b01", 1: "gpu-b07"}, at=31.0)
    [slow] = [probe_line(r) for r in named.evidence["probes"]]
    for line in (silent, slow):
        v = classify(line + "\n")
        assert (v.category, v.hosts, v.cordon) == ("network_switch_cable", ("gpu-b07",), False), line
    assert classify(alone + "\n").category == "unknown"
    psu = "  2 | 03/19/2026 | 03:11:58 | Power Supply #0x51 | Power Supply AC lost | Asserted\n"
    assert classify(psu + silent + "\n").category == "power_supply"
