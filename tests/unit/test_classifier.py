from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.classifier import classify
from orchestrator.taxonomy import CATEGORIES, COMPONENT_OF

EVIDENCE = Path(__file__).resolve().parents[1] / "fixtures" / "evidence"
FILES = sorted(EVIDENCE.glob("*/*.log"))


def test_labelled_set_covers_every_category() -> None:
    assert {f.parent.name for f in FILES} == set(CATEGORIES)
    assert all(sum(1 for f in FILES if f.parent.name == c) >= 4 for c in CATEGORIES)


def test_accuracy_on_labelled_set_is_at_least_95_percent() -> None:
    wrong = [(f.name, classify(f.read_text()).category) for f in FILES
             if classify(f.read_text()).category != f.parent.name]
    assert 1 - len(wrong) / len(FILES) >= 0.95, wrong


@pytest.mark.parametrize("f", FILES, ids=lambda f: f.name)
def test_verdict_shape(f: Path) -> None:
    v = classify(f.read_text())
    assert v.component == COMPONENT_OF[v.category]
    assert 0.0 <= v.confidence <= 1.0
    if v.category != "unknown":
        assert "line" in v.explanation  # names the deciding line


def test_application_xid_without_hardware_is_software() -> None:
    v = classify("kernel: NVRM: Xid (PCI:0000:3b:00): 13, pid=1, Graphics Exception\n")
    assert v.category == "software_bug" and v.xids == (13,)


def test_hardware_outranks_its_symptoms() -> None:
    text = "\n".join([
        "kernel: NVRM: Xid (PCI:0000:3b:00): 13, pid=1, Graphics Exception",
        "kernel: NVRM: Xid (PCI:0000:3b:00): 48, pid=1, An uncorrectable double bit error (DBE)",
        "[rank3]: [E ProcessGroupNCCL.cpp:616] Watchdog caught collective operation timeout",
        "[rank3]: RuntimeError: CUDA error: uncorrectable ECC error encountered",
    ])
    v = classify(text)
    assert v.category == "gpu_hbm3_memory" and v.component == "gpu" and set(v.xids) == {13, 48}


def test_no_signature_is_unknown_and_bare_hang_is_watchdog() -> None:
    assert classify("step 100 loss 2.0\nstep 101 loss 1.9\n").category == "unknown"
    assert classify("step 100 loss 2.0\n", kind="hang").category == "nccl_watchdog_timeout"


def test_benign_noise_does_not_match() -> None:
    noise = "\n".join([
        "kernel: IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
        "NCCL INFO Channel 00/32 : 0[0] -> 1[1] via P2P/IPC/read",
        "kernel: EXT4-fs (md0): mounted filesystem with ordered data mode",
        "INFO checkpoint step-00001000 committed in 3.2s",
    ])
    assert classify(noise).category == "unknown"
