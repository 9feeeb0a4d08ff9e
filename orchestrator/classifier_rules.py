"""The signatures the classifier knows, each from a real source's wording (DESIGN.md, "How evidence decides").

Sources: NVIDIA's Xid catalog and nvidia-smi/DCGM output; the Linux kernel's
MCE, EDAC, NVMe, block layer, PCIe AER/hotplug, mlx5 and NFS messages; ipmitool
SEL and Redfish events; NCCL and PyTorch (ProcessGroupNCCL) strings.

Each rule has a role:
- `cause`: names a fault; the earliest one in time decides.
- `weak`: names a likely fault that is often a consequence of another (an
  application Xid, a CUDA illegal address, an RDMA retry error, EIO on a path):
  it decides only when no `cause` is present anywhere in the evidence.
- `timeout`: a collective or heartbeat timed out; decides `nccl_watchdog_timeout`
  only when nothing names a cause.
Strength is how specific the signature is; it becomes the verdict's confidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Role = Literal["cause", "weak", "timeout"]

XID_RE = re.compile(r"\bXid\b(?:\s*\(PCI:(?P<pci>[0-9a-fA-F:.]+)\))?[\s:=]*(?:code[\s:=]*)?(?P<code>\d{1,3})\b",
                    re.IGNORECASE)

# Xid code -> (category, strength, role, what NVIDIA's catalog says it is). Xid 92 (corrected SBE) never decides.
XID_TABLE: dict[int, tuple[str, float, Role, str]] = {
    79: ("faulty_gpu", 0.95, "cause", "GPU has fallen off the bus"),
    74: ("faulty_gpu", 0.9, "cause", "NVLink error"),
    **{c: ("faulty_gpu", 0.85, "cause", "NVLink error") for c in range(144, 151)},
    62: ("faulty_gpu", 0.8, "cause", "internal micro-controller halt"),
    61: ("faulty_gpu", 0.7, "weak", "internal micro-controller breakpoint/warning"),
    154: ("faulty_gpu", 0.7, "weak", "GPU recovery action changed (reset or reboot required)"),
    48: ("gpu_hbm3_memory", 0.95, "cause", "double-bit ECC error"),
    63: ("gpu_hbm3_memory", 0.85, "cause", "ECC page retirement or row remapping event"),
    64: ("gpu_hbm3_memory", 0.95, "cause", "ECC page retirement or row remapping failure"),
    94: ("gpu_hbm3_memory", 0.88, "cause", "contained uncorrectable ECC error"),
    95: ("gpu_hbm3_memory", 0.9, "cause", "uncontained uncorrectable ECC error"),
    140: ("gpu_hbm3_memory", 0.88, "cause", "unrecovered ECC error"),
    119: ("gpu_system_processor", 0.95, "cause", "GSP RPC timeout"),
    120: ("gpu_system_processor", 0.95, "cause", "GSP error"),
    13: ("software_bug", 0.6, "weak", "graphics engine exception (usually the application)"),
    31: ("software_bug", 0.6, "weak", "GPU memory page fault (usually the application)"),
    43: ("software_bug", 0.55, "weak", "GPU stopped processing (usually the application)"),
}
SRAM_NAMED = re.compile(r"\bSRAM\b", re.IGNORECASE)
XID_COUNT_RE = re.compile(r"\bxid[_ -]?(?P<code>\d{1,3})(?:_(?:count|total|errors?))?\s*[=:]\s*[1-9]", re.IGNORECASE)
"""A per-code Xid count that is not zero (`xid_79=1`), as fleet scans and exporters tabulate them."""
CLOCK_EVENT_REASONS = re.compile(
    r"(?:clocks?[_ ](?:event|throttle)[_ ]reasons?(?:\.active)?|DCGM_FI_DEV_CLOCKS?_(?:THROTTLE|EVENT)_REASONS)"
    r"(?:\{[^}]*\})?\s*[:=]?\s*(?P<value>0x[0-9a-f]+|\d+)\b", re.IGNORECASE)
"""NVML's clock-event (throttle) reasons bitmask: nvidia-smi's `clocks_event_reasons.active`, DCGM's field, or
dcgm-exporter's `DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{...} 64`."""
HW_THERMAL_SLOWDOWN_BIT = 0x40
"""nvmlClocksEventReasonHwThermalSlowdown (DCGM_CLOCKS_THROTTLE_REASON_HW_THERMAL)."""


@dataclass(frozen=True, slots=True)
class Rule:
    category: str
    strength: float
    role: Role
    name: str
    pattern: re.Pattern[str]


def _r(category: str, strength: float, role: Role, name: str, *patterns: str) -> list[Rule]:
    return [Rule(category, strength, role, name, re.compile(p, re.IGNORECASE)) for p in patterns]


_FAIL = r"(?:fail\w*|fault\w*|error|fatal|critical|down|lost|dead|not (?:detected|present|found|responding))"

RULES: list[Rule] = [
    # --- GPU ----------------------------------------------------------------------------------------------
    *_r("faulty_gpu", 0.95, "cause", "GPU fallen off the bus",
        r"fallen off the bus", r"NVML_ERROR_GPU_IS_LOST", r"\bGPU (?:is |has been )?lost\b"),
    *_r("faulty_gpu", 0.9, "cause", "GPU missing",
        r"Unable to determine the device handle for GPU", r"\bNo devices were found\b",
        r"\bGPU\s*\d*\s*(?:is )?(?:missing|not (?:detected|found|visible))\b",
        r"expected \d+ GPUs?,? (?:but )?(?:found|got|saw|detected) \d+", r"RmInitAdapter failed"),
    *_r("faulty_gpu", 0.9, "cause", "NVLink failure",
        r"NVLink.{0,60}(?:fatal|error|down|inactive|fail)"),  # also DCGM_FR_NVLINK_DOWN / _ERROR_*
    *_r("faulty_gpu", 0.88, "cause", "PCIe fatal error on a GPU",
        r"AER:.{0,80}Uncorrected \(Fatal\).{0,160}(?:NVIDIA|3D controller|\bGPU\b)",
        r"(?:\bnvidia\b|NVIDIA|3D controller|\bGPU\b).{0,120}AER:.{0,60}Uncorrected \(Fatal\)"),
    *_r("faulty_gpu", 0.88, "cause", "GPU burn-in or diagnostic failed",
        r"burn[- ]?in.{0,80}(?:fail|miscompare|mismatch|wrong result)", r"dcgmi diag.{0,120}\bfail",
        r"(?-i:\bGPU\s*\d+\s*:\s*FAULTY\b)",  # gpu-burn's verdict per GPU: `GPU 5: FAULTY`
        # a `dcgmi diag` result row: `| Diagnostic | Fail - GPU: 2 |`, `| Memory | Fail - All |`, DCGM 4's `GPU0: Fail`
        r"\|\s*Fail - (?:All|GPU\b)", r"\|\s*GPU\s?\d+:\s*Fail\b",
        r"DCGM_FR_(?:FAULTY_MEMORY|PCI_REPLAY_RATE|PCIE_\w+|DIAGNOSTIC_\w*FAIL\w*)"),
    *_r("faulty_gpu", 0.8, "cause", "fatal NVSwitch error", r"\bSXid\b.{0,80}(?<!Non-)\bFatal\b"),
    *_r("faulty_gpu", 0.6, "weak", "GPU reset required",
        r"GPU requires reset", r"nvidia-smi has failed because it couldn't communicate with the NVIDIA driver"),
    *_r("gpu_hbm3_memory", 0.92, "cause", "uncorrectable HBM/DRAM ECC or row remap failure",
        r"^(?!.*(?:SRAM|DIMM|EDAC|Memory #|\bMemory\s*\||ECC error encountered)).*(?:double[- ]bit|uncorrectable|\bDBE\b).{0,40}\bECC\b",
        r"^(?!.*(?:SRAM|DIMM|EDAC|Memory #|\bMemory\s*\||ECC error encountered)).*\bECC\b.{0,40}(?:double[- ]bit|uncorrectable|\bDBE\b)",
        r"\bDRAM Uncorrect\w*\s*[:=]\s*[1-9]", r"Remapping Failure Occurred\s*:\s*Yes", r"^\s*Pending\s*:\s*Yes\s*$",
        r"(?:Remapped Rows|row[- ]?remap\w*).{0,60}Pending\s*:\s*Yes", r"row[- ]?remap\w*.{0,40}(?:fail|pending)",
        r"DCGM_FR_(?:ROW_REMAP\w*|VOLATILE_DBE\w*|PENDING_ROW_REMAP|RETIRED_PAGES\w*|PENDING_PAGE_RETIREMENTS)",
        r"\bHBM\d?e?\b.{0,40}(?:uncorrect\w*|ECC error|fail\w*)",
        r"(?:retired pages?|page retirement).{0,40}(?:pending\s*:\s*Yes|limit|exceed|fail)"),
    *_r("gpu_hbm3_memory", 0.7, "weak", "CUDA reports an uncorrectable ECC error",
        r"uncorrectable ECC error encountered"),
    *_r("gpu_sram_memory", 0.92, "cause", "uncorrectable SRAM ECC",
        r"\bSRAM\b.{0,50}(?:uncorrect\w*|parity|\bDBE\b|threshold)", r"(?:uncorrect\w*|parity).{0,50}\bSRAM\b",
        r"DCGM_FR_SRAM_THRESHOLD"),
    *_r("gpu_system_processor", 0.92, "cause", "GSP firmware failure",
        r"\bGSP\b.{0,60}(?:timeout|timed out|error|fail|crash|exception|not responding)",
        r"waiting for RPC response from GPU\d* GSP"),
    *_r("gpu_thermal_interface_sensor", 0.9, "cause", "GPU HW thermal slowdown or thermal sensor fault",
        r"\bHW Thermal Slowdown\s*:\s*Active", r"hw_thermal_slowdown\W{0,6}Active",
        r"(?<!SW )(?:HW|hardware) thermal (?:slowdown|throttl\w*)(?!\s*:)",
        r"(?:GPU|HBM|memory).{0,40}(?:over[- ]?temperature|thermal (?:violation|shutdown))",
        r"DCGM_FR_(?:TEMP_VIOLATION|CLOCK_THROTTLE_THERMAL|CLOCKS_EVENT_THERMAL\w*|THERMAL_\w+)",
        # dcgm-exporter's DCGM_EXP_CLOCK_EVENTS_COUNT{clock_event="hw_thermal"} (formerly throttle_reason=...)
        r"(?:clock_event|throttle_reason)=\"hw_thermal\"[^}]*\}\s*[1-9]",
        r"(?:temp\w*|thermal).{0,40}(?:reading|value).{0,30}(?:out[- ]of[- ]range|invalid)",
        r"(?:thermal|temperature) (?:sensor|interface).{0,60}(?:fail\w*|error|invalid|out[- ]of[- ]range|missing|"
        r"not present|N/A|no reading|unavailable|unreadable)",
        r"\bGPU\s*\d*[ _]Temp\b.{0,60}(?:Upper (?:Critical|Non-recoverable)|going high|reading failed|Sensor failure)"),
    *_r("gpu_thermal_interface_sensor", 0.75, "cause", "GPU slowdown or temperature reading out of range",
        r"\bHW Slowdown\s*:\s*Active", r"GPU temperature.{0,40}(?:exceed\w*|critical|above)",
        r"\bGPU Current Temp\s*:\s*N/A"),
    *_r("silent_data_corruption", 0.93, "cause", "replica disagreement confirmed by a replay",
        r"(?:replay\w*|recomput\w*|re-?ran|re-?run|re-?execut\w*|repeated).{0,100}(?:(?:another|a different|other|spare|"
        r"healthy) (?:host|node|GPU|replica|hardware)|\bon (?:a |the )?spare\b).{0,100}(?:agree\w*|match\w*|confirm\w*)"
        r"(?!.{0,20}\bdisagree)",
        # the replay's result agrees with the replicas that did not disagree
        r"(?:replay\w*|recomput\w*|re-?ran|re-?run|re-?execut\w*).{0,120}(?:agree\w*|consistent|match\w*|==|identical)"
        r"\s*(?:with|to)?\s*(?:the )?(?:majority|reference|others|other replicas|replicas)\b(?!.{0,20}\bdisagree)",
        r"\b(?:SDC|silent data corruption) confirmed\b"),
    *_r("silent_data_corruption", 0.72, "cause", "replica disagreement (not yet confirmed)",
        r"^(?!.*(?:checkpoint|ckpt|shard|file|download|upload|\.pt\b|\.distcp)).*(?:checksum|hash|fingerprint|digest)"
        r".{0,40}(?:mismatch|differ\w*|disagree\w*).{0,80}(?:replica|rank|parameter|gradient)",
        r"^(?!.*(?:checkpoint|ckpt|shard|file|download|upload|\.pt\b|\.distcp)).*(?:checksum|hash|fingerprint|digest)"
        r"\s*[:=]?\s*(?:0x)?[0-9a-f]{4,}\s*!=",  # one replica's value != the others'
        r"^(?!.*(?:checkpoint|ckpt|shard|file|download|upload))(?=.*\b(?:replica|rank|data-parallel)s?\b)"
        r"(?=.*(?:disagree|diverge|differ|mismatch|miscompare))"
        r"(?=.*(?:checksum|hash|bitwise|result|gradient|parameter|loss|output|fingerprint|digest))",
        r"\bSDC\b.{0,40}(?:detect\w*|fail\w*|mismatch\w*|suspect\w*|found)",
        r"silent data corruption.{0,20}(?:detect\w*|suspect\w*|found)"),
    # --- host ---------------------------------------------------------------------------------------------
    *_r("system_memory", 0.92, "cause", "uncorrectable host memory error (EDAC/DIMM)",
        r"EDAC\b.{0,40}\b(?:[1-9]\d* )?UE\b", r"EDAC\b.{0,80}uncorrect\w*", r"Uncorrected hardware memory error",
        r"\bMemory\b.{0,60}\|\s*Uncorrectable ECC", r"\bDIMM\w*\b.{0,60}(?:uncorrect\w*|fail\w*|fault\w*)",
        r"(?:mce|Hardware Error).{0,120}(?:memory read error|memory write error|\bDIMM|\bDRAM\b|Unified Memory Controller)",
        r"HANDLING MCE MEMORY ERROR", r"\[Hardware Error\]:\s+section_type: memory error"),
    *_r("cpu", 0.9, "cause", "CPU machine check",
        r"Machine Check(?: Exception)?:.{0,40}\bBank \d+",
        r"\|\s*(?:IERR|CATERR)\b|\b(?:IERR|CATERR)\b.{0,20}(?:Asserted|detected|occurred|error)",
        r"\bProcessor\b.{0,60}(?:Thermal Trip|Machine Check|Configuration Error|FRB\d)",
        r"\bCPU\s*\d*.{0,40}(?:internal parity error|Machine Check)", r"processor context corrupt",
        r"\bMC\d+_STATUS\[[^\]]*\bUC?E\b",
        # an APEI/GHES (firmware-first) record's processor section; a corrected record never decides (parse)
        r"\[Hardware Error\]:\s+section_type: (?:general|IA32/X64|ARM|Itanium) processor error"),
    *_r("cpu", 0.75, "weak", "fatal machine check panic", r"Kernel panic - not syncing: Fatal machine check"),
    *_r("ssd", 0.9, "cause", "NVMe/SSD I/O error or controller reset",
        r"\bnvme nvme\d+:.{0,80}(?:reset controller|controller is down|Device not ready|Removing after probe failure|"
        r"resetting controller|Disabling device|failed to (?:set|read))",
        r"(?:I/O error|critical medium error|Medium Error).{0,40}\bdev (?:nvme\d+n\d+|sd[a-z]+)",
        r"EXT4-fs error \(device (?:nvme|sd[a-z])", r"\bnvme\d+n\d+:.{0,80}\bI/O Error\b",
        r"Drive Slot.{0,40}\|\s*(?:Drive Fault|Predictive Failure)",
        r"XFS \((?:nvme|sd[a-z])\w*\).{0,80}(?:error|shut\w* down|I/O)",
        r"Critical Warning\s*:\s*0x0*[1-9a-f]", r"Available Spare.{0,40}below threshold",
        r"SMART overall-health.{0,40}FAIL", r"Media and Data Integrity Errors\s*:\s*[1-9]",
        r"Disk failure on (?:nvme|sd[a-z])", r"Remounting filesystem read-only.{0,40}(?:nvme|sd[a-z])", r"\b(?:SSD|NVMe (?:drive|SSD|disk))\b.{0,40}(?:fail\w*|error|worn|offline)"),
    *_r("ssd", 0.65, "weak", "NVMe command timeout", r"\bnvme nvme\d+: I/O \d+ QID \d+ timeout"),
    *_r("power_supply", 0.9, "cause", "power supply fault or power loss (SEL)",
        r"Power Supply.{0,60}(?:Failure detected|AC lost|input lost|Predictive failure|Config(?:uration)? error|"
        r"\|\s*Failure)",
        r"Power Unit.{0,60}(?:Redundancy Lost|AC lost|Power off|Soft-power control failure|Failure)",
        r"\bPSU\s?\d*\b.{0,60}(?:fail\w*|fault\w*|lost|critical|input lost)",
        r"PowerSupply\w*.{0,60}(?:Critical|input lost|fail\w*)", r"\b(?:AC|input) power (?:lost|loss)\b",
        r"\bpower (?:loss|failure) (?:detected|event)"),
    *_r("server_chassis", 0.88, "cause", "chassis intrusion",
        r"Chassis intru\w*.{0,20}(?:Asserted|detected)", r"HardwareIntrusion",
        # Redfish/iDRAC event text (SEC0031 "The chassis is open while the power is on."), OMSA's cover/bezel state
        r"\b(?:chassis|(?:system |chassis )?cover|bezel)\b (?:is|was|has been) (?:open(?:ed)?|removed)\b"),
    *_r("server_chassis", 0.88, "cause", "fan or backplane failure",
        r"\bFan\w*\b.{0,60}(?:fail\w*|Lower (?:Critical|Non-recoverable)|Redundancy Lost|not present|stopped|fault)",
        r"\bbackplane\b.{0,60}(?:fail\w*|fault\w*|error|critical|lost)",
        r"(?:baseboard|motherboard|system board).{0,60}(?:fail\w*|fault\w*|critical)",
        r"\bchassis\b(?! power).{0,40}(?:fault\w*|fail\w*|critical)",
        # ipmitool SEL: a Module / Board sensor (IPMI sensor type 15h) gone critical or non-recoverable
        r"\bModule ?/ ?Board\b.{0,60}\|\s*(?:Transition to (?:Critical|Non-recoverable)|\w+ (?:Critical|Non-recoverable) going)"),
    *_r("io_expansion_board", 0.9, "cause", "PCIe switch, retimer or riser fault",
        r"(?:PCIe|PCI) ?switch.{0,100}(?:error|fail\w*|down|Uncorrected|fatal|critical)",
        r"\b(?:PEX|PLX)\s?\d*\b.{0,80}(?:error|fail\w*|link down|Uncorrected)",
        rf"IO expansion (?:board|module).{{0,60}}{_FAIL}", rf"\b(?:retimer|riser)\b.{{0,60}}{_FAIL}",
        r"PCIe Bridge.{0,60}(?:AER|Uncorrected|Fatal)", rf"\bIOB\d*\b.{{0,40}}{_FAIL}"),
    *_r("io_expansion_board", 0.6, "weak", "PCIe slot link down", r"pciehp.{0,40}Link Down"),
    *_r("nic", 0.9, "cause", "host adapter failure (mlx5/HCA)",
        r"mlx5_core.{0,120}(?:health compromised|recovery flow aborted|\bfatal\b|firmware (?:fatal|error|internal)|"
        r"FW fatal|error state|internal error|PCI (?:slot|device).{0,20}(?:removed|error)|assert_var|"
        r"cmd_work_handler.{0,40}fail|device.{0,20}(?:removed|gone)|mlx5_pci_err_detected)",
        r"\b(?:HCA|ConnectX-?\d*|NIC)\b.{0,60}(?:fail\w*|fatal|not responding|firmware error|gone|missing|not found)",
        r"DCGM_FR_CONNECTX\w*", r"ibstat.{0,40}No IB devices"),
    *_r("nic", 0.85, "cause", "adapter transmit queue stuck (mlx5 TX timeout)",
        r"mlx5_core.{0,80}\bTX timeout (?:detected|on queue)"),
    *_r("nic", 0.7, "weak", "adapter verbs or transmit failure",
        r"ibv_(?:open_device|create_qp|reg_mr|get_device_list).{0,60}fail", r"Unable to open device mlx5",
        r"NETDEV WATCHDOG:.{0,60}transmit queue \d+ timed out"),
    # --- network ------------------------------------------------------------------------------------------
    *_r("network_switch_cable", 0.88, "cause", "link down, flapping or switch/cable fault",
        r"^(?!.*(?:pciehp|pcieport|Slot\()).*(?:mlx5_core|mlx5_\d+|\bib\d+|\beth\d+|\ben[ops]\w+|\bbond\d+|"
        r"\bice\b|bnxt\w*|\bport\b).{0,80}\b(?:link (?:is |went |status )?(?:definitely )?down|carrier lost|lost carrier)\b",
        r"Physical (?:link )?state.{0,30}(?:Polling|Disabled|Down)\b",
        r"\bport\b.{0,40}\bstate\b.{0,15}(?:DOWN|INIT)\b", r"\blink (?:flap\w*|retrain\w*)\b",
        r"(?:SymbolErrorCounter|LinkDownedCounter|LinkErrorRecoveryCounter|symbol errors?)\D{0,40}[1-9]",
        r"\b(?:rx_)?(?:symbol_err|link_down_events)\w*\s*[:=]\s*[1-9]",
        r"^(?!.*(?:PCIe|PCI|PLX|PEX\w*) ?switch).*\b(?:switch|cable|transceiver|optic|QSFP\w*|OSFP)\b.{0,60}"
        r"(?:fail\w*|down|error|fault|unplug\w*|flap\w*|rx[ _]?los)",
        r"\brx[ _]los\b", r"Subnet Manager.{0,40}(?:lost|down|unreachable)"),
    *_r("network_switch_cable", 0.65, "weak", "RDMA transport retries exhausted",
        r"transport retry counter exceeded", r"\bstatus=12\b", r"with error 12\b", r"IBV_WC_RETRY_EXC_ERR", r"remote access error"),
    # A host silent on the network while the job's other hosts answer (health/reachability.py): its link most
    # likely; weak, because a host without power is silent too and its BMC's events name that first.
    *_r("network_switch_cable", 0.6, "weak", "host silent on the network while its peers answer",
        r"host did not answer on the network\b.{0,200}other hosts answered"),
    *_r("network_switch_cable", 0.6, "weak", "a host's link far slower than its peers'",
        r"link slow: host \S+'s link is far slower than its peers'"),
    # --- maintenance, the outside world, software ---------------------------------------------------------
    *_r("host_maintenance", 0.85, "cause", "host taken down for maintenance",
        r"(?:drain|cordon)(?:ed|ing)?\b.{0,80}(?:maint\w*|kernel (?:update|upgrade|patch)|firmware|BIOS|repair|reboot)",
        # kubectl drain/cordon output and the node event a cordon raises
        r"\bnode/\S+ (?:drained|cordoned)\b", r"^(?!.*(?:eviction manager|pressure|low on resource)).*\bevicting pod \S+/",
        r"\bNodeNotSchedulable\b",
        r"\b(?:drain|cordon)(?:ed|ing)? by (?:user|admin\w*|operator|ops\b|root\b)",
        # Slurm: scontrol reboot (slurmctld's node state, slurmd's RebootProgram run)
        r"\bREBOOT_(?:ISSUED|REQUESTED)\b", r"Node reboot request being processed", r"\bscontrol reboot\b",
        r"\breboot request\b.{0,40}\bnodes?\b",
        # a power cycle someone asked the BMC for (IPMI/Redfish user, fleet remediation), not a PSU fault
        r"\bpower[- ]?(?:cycle|reset|off)\b.{0,60}\b(?:requested|initiated|issued) by\b",
        r"\b(?:remediation|fleet|operator|admin\w*)\b.{0,60}\bpower[- ]?cycl\w*",
        r"Reason=.{0,30}(?:maint|kernel|upgrade|reboot|firmware)",
        r"maintenance (?:event|mode|reboot|in progress|started|notice)",
        r"(?:kernel|firmware|BIOS|driver) (?:upgrade|update|patch)\w*.{0,60}(?:reboot|restart|drain)",
        r"host (?:is )?(?:being )?(?:migrated|rebooted|drained) for maintenance", r"live[- ]migrat\w+",
        r"terminated.{0,40}maintenance", r"unattended-upgrade\w*.{0,60}reboot",
        # kured (Kubernetes reboot daemon) acting on the reboot-required sentinel: "Reboot required",
        # "Draining node %s", "Commanding reboot for node: %s"
        r"\bCommanding reboot for node\b", r"\bkured\b.{0,60}\b(?:Reboot required|Draining node)\b"),
    *_r("host_maintenance", 0.65, "weak", "host reboot",
        r"going down for reboot", r"Reached target (?:System )?Reboot", r"reboot: Restarting system", r"System is rebooting",
        r"System is powering down", r"reboot: Power down",
        # the kubelet's graceful node shutdown: its NodeShutdown event and the log line of each pod it stops
        r"Shutdown manager detected shutdown event", r"Shutdown manager killing pod"),
    *_r("dependency", 0.88, "cause", "shared storage or outside service failed",
        r"\bnfs: server .{0,40}not responding", r"LustreError",
        r"Lustre.{0,80}(?:evicted|unavailable|timed out|was lost)", r"GPFS.{0,40}(?:unmount\w*|unavailable|expelled)",
        r"(?:\bS3\b|object store|bucket|\bGCS\b|blob storage).{0,80}(?:\b503\b|SlowDown|Slow Down|ServiceUnavailable|"
        r"unavailable|timed out|timeout|throttl\w*|not responding)",
        r"\b503 (?:Slow Down|Service Unavailable)", r"(?-i:\b(?:SlowDown|ServiceUnavailable)\b)",
        r"Could not connect to the endpoint URL", r"Failed to pull image", r"Unable to contact slurm controller",
        r"Temporary failure in name resolution", r"Name or service not known", r"\b(?:NXDOMAIN|SERVFAIL)\b",
        r"[Cc]ould not resolve host", r"\b(?:ErrImagePull|ImagePullBackOff|toomanyrequests)\b",
        r"manifest (?:for \S+ )?unknown", r"pull access denied",
        r"(?:slurmctld|slurm controller|kube-apiserver|\betcd\w*|scheduler|metadata server|registry)"
        r".{0,60}(?:unavailable|unreachable|not responding|timed out|timeout|connection refused)",
        r"No space left on device", r"\[Errno 28\]", r"\bENOSPC\b", r"Disk quota exceeded",
        r"Stale (?:NFS )?file handle", r"Transport endpoint is not connected",
        r"(?:checkpoint|ckpt|shard).{0,80}(?:checksum|hash|digest|crc).{0,40}(?:mismatch|invalid|fail\w*|differ\w*)",
        r"(?:checksum|hash|digest|crc).{0,40}(?:mismatch|invalid|fail\w*).{0,80}(?:checkpoint|ckpt|shard)",
        r"\bno (?:committed |valid |usable )?checkpoints?\b.{0,60}(?:could be (?:read|loaded)|readable|loadable)",
        r"\ball (?:\d+ )?(?:committed |valid )?checkpoints?\b.{0,60}(?:unreadable|corrupt\w*|could not be (?:read|loaded))",
        r"checkpoint.{0,60}(?:corrupt\w*|unreadable)"),
    *_r("dependency", 0.65, "weak", "I/O error on a path (storage)",
        r"Input/output error", r"\[Errno 5\]", r"\bEIO\b", r"Read-only file system"),
    *_r("software_bug", 0.85, "cause", "out of memory",
        r"Out of memory: Killed process", r"\boom-kill:", r"CUDA out of memory",
        r"OutOfMemoryError", r"\bOOMKilled\b",
        # Ray's memory monitor (raylet) killing a worker above the usage threshold
        r"killed due to the node running low on memory", r"exceeds the memory usage threshold",
        r"killed due to memory pressure \(OOM\)"),
    *_r("software_bug", 0.8, "cause", "application exception or bad configuration",
        r"\b(?:ValueError|TypeError|KeyError|IndexError|AssertionError|AttributeError|ZeroDivisionError|NameError|"
        r"NotImplementedError|FloatingPointError|UnboundLocalError|RecursionError|ModuleNotFoundError|ImportError|"
        r"SyntaxError|FileNotFoundError)\b:",
        r"RuntimeError: (?:The size of tensor|shape|mat\d and mat\d|Expected|expected|Error\(s\) in loading|size mismatch)",
        # not strerror(EINVAL) after an errno ("[Errno 22] Invalid argument", c10d's "(errno: 22 - Invalid argument)")
        r"(?<!\[Errno 22\] )(?<!errno: 22 - )\b(?:invalid|bad|unknown) (?:config\w*|argument|option|hyperparameter)\b",
        r"cannot open shared object file", r"undefined symbol:", r"Driver/library version mismatch",
        r"CUDA driver version is insufficient"),
    *_r("software_bug", 0.8, "cause", "loss or gradient became NaN/inf",
        r"(?:loss|grad(?:ient)?[ _]norm)\b.{0,40}?(?:\bis\b|\bbecame\b|=|:)\s*(?:nan|inf)\b", r"non-finite loss"),
    *_r("software_bug", 0.6, "weak", "CUDA illegal access or crash without hardware evidence",
        r"illegal memory access", r"device-side assert", r"misaligned address", r"Segmentation fault",
        r"\bSIGSEGV\b", r"illegal instruction",
        # the kernel's report of a user process's fault: "python[20112]: segfault at 18 ip ... error 4 in libx.so",
        # "traps: python[20111] general protection fault ip:... error:0 in libx.so"
        r"\bsegfault at [0-9a-f]+ ip\b", r"\btraps: \S+\[\d+\] (?:general protection fault|trap [\w ]+) ip:"),
    # --- timeouts: what is left when nothing names a cause ------------------------------------------------
    *_r("nccl_watchdog_timeout", 0.5, "timeout", "collective or heartbeat timed out",
        r"collective operation timeout",  # "Watchdog caught collective operation timeout"
        r"ran for \d+ milliseconds before timing out", r"Heartbeat monitor timed out",
        r"watchdog (?:got stuck|thread terminated|hang)", r"Timed out waiting \d+ms for (?:recv|send)",
        r"NCCL (?:WARN|ERROR|error).{0,80}(?:timeout|timed out)", r"\bNCCL timeout\b",
        r"Some NCCL operations have failed or timed out", r"DistStoreError.{0,40}[Tt]imed out",
        r"did not complete within \d+", r"Timeout at NCCL work", r"Socket Timeout"),
]
