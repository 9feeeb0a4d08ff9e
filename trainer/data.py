"""Byte-level document stream and a stateless, rank-sharded sample order.

Every file is one document, followed by an end-of-document token. Training
samples are fixed windows of seq_len+1 tokens; the order of windows is a
seeded permutation per epoch. Sample number g of the run is a pure function
of (seed, g), and a step's global batch is samples [base + (step-base_step)*B,
+B), split over data-parallel ranks by index. So resuming under a different
data-parallel size neither skips nor repeats a sample: only the number of
samples consumed is saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.files import resolve_files
from trainer.tokenizer import EOD_TOKEN


def load_token_stream(patterns: list[str], max_bytes: int) -> torch.Tensor:
    """Concatenate files (sorted by path) as bytes + EOD, up to max_bytes tokens."""
    files = resolve_files(patterns)
    if not files:
        raise FileNotFoundError(f"no data files match {patterns}")
    chunks: list[torch.Tensor] = []
    total = 0
    for path in files:
        with open(path, "rb") as f:
            raw = f.read(max_bytes - total)
        doc = (torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int16) if raw
               else torch.empty(0, dtype=torch.int16))
        chunks.append(torch.cat([doc, torch.tensor([EOD_TOKEN], dtype=torch.int16)]))
        total += len(raw) + 1
        if total >= max_bytes:
            break
    return torch.cat(chunks)


@dataclass(frozen=True, slots=True)
class Batch:
    """Inputs, targets and document ids (batch, seq); positions are implied 0..seq-1."""

    inputs: torch.Tensor
    targets: torch.Tensor
    docs: torch.Tensor
    sample_ids: torch.Tensor


class SampleOrder:
    """Maps a global sample number to a window of the token stream."""

    def __init__(self, stream: torch.Tensor, seq_len: int, seed: int) -> None:
        self.stream, self.seq_len, self.seed = stream, seq_len, seed
        self.num_windows = (len(stream) - 1) // seq_len
        if self.num_windows < 1:
            raise ValueError(f"data has {len(stream)} tokens, fewer than seq_len+1 = {seq_len + 1}")
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def window_of(self, sample: int) -> int:
        epoch, i = divmod(sample, self.num_windows)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm = torch.randperm(self.num_windows, generator=g)
            self._perm_epoch = epoch
        return int(self._perm[i])

    def batch(self, samples: list[int]) -> Batch:
        rows = []
        for s in samples:
            start = self.window_of(s) * self.seq_len
            rows.append(self.stream[start : start + self.seq_len + 1].to(torch.long))
        w = torch.stack(rows)
        inputs, targets = w[:, :-1], w[:, 1:]
        # A token's document is the number of EODs strictly before it; the EOD
        # itself closes its document.
        is_eod = (inputs == EOD_TOKEN).to(torch.long)
        docs = torch.cumsum(is_eod, dim=1) - is_eod
        return Batch(inputs, targets, docs, torch.tensor(samples))


@dataclass(frozen=True, slots=True)
class DataPosition:
    """Where the sample order stands: step `step` starts at sample `sample`."""

    step: int
    sample: int


def rank_samples(pos: DataPosition, step: int, global_batch: int, dp_rank: int, dp: int) -> list[int]:
    """The samples of `step` that belong to data-parallel rank `dp_rank` (contiguous slice)."""
    if global_batch % dp:
        raise ValueError(f"global batch {global_batch} not divisible by dp {dp}")
    first = pos.sample + (step - pos.step) * global_batch
    per = global_batch // dp
    return list(range(first + dp_rank * per, first + (dp_rank + 1) * per))
