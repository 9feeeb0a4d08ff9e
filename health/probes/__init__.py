"""Probes of a host's hardware: GPUs through NVML, the kernel log, EDAC, the BMC, checkpoint storage."""
