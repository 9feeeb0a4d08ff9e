"""A snapshot round trip on one process (no process group): the state comes back exactly, or not at all."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from trainer.snapshot import Snapshotter


def _trained(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(2):
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_round_trip_then_a_damaged_snapshot_is_refused(tmp_path: Path) -> None:
    model, opt = _trained(1)
    snap = Snapshotter(tmp_path / "shm", 0, "key")
    snap.save(3, model, opt, {"step": 3, "sample": 24})
    rng_after_save = torch.rand(1)

    fresh, fresh_opt = _trained(2)
    assert not _same(model, fresh)
    extra = {"step": 0, "sample": 0}
    got = snap.resume(fresh, fresh_opt, extra, tmp_path / "ckpt")
    assert got is not None and got.step == 3 and extra == {"step": 3, "sample": 24}
    assert _same(model, fresh)
    a, b = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert all(torch.equal(a[k]["exp_avg_sq"], b[k]["exp_avg_sq"]) and torch.equal(a[k]["step"], b[k]["step"])
               for k in a)
    assert torch.equal(torch.rand(1), rng_after_save), "the RNG continues from where the snapshot was taken"

    # Another layout key: not this job's snapshot.
    other, other_opt = _trained(2)
    assert Snapshotter(tmp_path / "shm", 0, "other-key").resume(other, other_opt, {"step": 0}, tmp_path) is None
    # A flipped byte: refused, and the model keeps the state it had.
    data = next((tmp_path / "shm" / "rank-00000").glob("*.pt"))
    raw = bytearray(data.read_bytes())
    raw[-100] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert snap.resume(other, other_opt, {"step": 0}, tmp_path / "ckpt") is None
    assert _same(other, _trained(2)[0])
    assert not data.exists(), "a snapshot that fails its check is dropped"


def test_the_written_snapshot_is_the_state_at_save_time_from_buffers_kept_between_saves(tmp_path: Path) -> None:
    """The write runs in the background while training goes on: what lands is the state the save copied,
    not what the live tensors hold by the time the writer gets to them."""
    model, opt = _trained(1)
    snap = Snapshotter(tmp_path / "shm", 0, "key")
    at_save = {k: v.clone() for k, v in model.state_dict().items()}
    writer_busy = threading.Event()
    snap._writer.submit(writer_busy.wait, 30)  # the writer gets to the snapshot only once released
    snap.save(3, model, opt, {"step": 3, "sample": 24})
    with torch.no_grad():  # the next optimizer step, before the writer has run
        for p in model.parameters():
            p.add_(1.0)
    assert not list((tmp_path / "shm").glob("rank-*/*.pt")), "written before the writer was released"
    writer_busy.set()
    buffers = [t.data_ptr() for t in snap._buffers[1] if isinstance(t, torch.Tensor)]
    snap.save(4, model, opt, {"step": 4, "sample": 32})
    assert [t.data_ptr() for t in snap._buffers[1] if isinstance(t, torch.Tensor)] == buffers, "buffers reused"
    snap.close()
    assert snap.last_step == 4 and sorted(p.name for p in (tmp_path / "shm" / "rank-00000").glob("*.pt")) == [
        "step-00000003.pt", "step-00000004.pt"]

    fresh, fresh_opt = _trained(2)
    snap.drop_after(3)  # the step-4 snapshot goes: the one of step 3 is what resume finds
    got = Snapshotter(tmp_path / "shm", 0, "key").resume(fresh, fresh_opt, {"step": 0}, tmp_path / "ckpt")
    assert got is not None and got.step == 3
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in at_save.items())
