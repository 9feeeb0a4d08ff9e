from __future__ import annotations

from pathlib import Path

import torch

from trainer.data import DataPosition, SampleOrder, load_token_stream, rank_samples
from trainer.tokenizer import EOD_TOKEN


def _corpus(tmp_path: Path) -> list[str]:
    for i in range(5):
        (tmp_path / f"doc{i}.txt").write_bytes(bytes([65 + i]) * (50 + 10 * i))
    return [str(tmp_path / "*.txt")]


def test_stream_has_one_eod_per_document(tmp_path: Path) -> None:
    stream = load_token_stream(_corpus(tmp_path), 10_000)
    assert int((stream == EOD_TOKEN).sum()) == 5
    assert len(stream) == sum(50 + 10 * i for i in range(5)) + 5


def test_max_bytes_truncates(tmp_path: Path) -> None:
    stream = load_token_stream(_corpus(tmp_path), 120)
    # doc0 (50 A) + EOD, doc1 (60 B) + EOD, then the first 8 bytes of doc2 + EOD: 121 tokens.
    expected = [65] * 50 + [EOD_TOKEN] + [66] * 60 + [EOD_TOKEN] + [67] * 8 + [EOD_TOKEN]
    assert stream.tolist() == expected


def test_sample_order_is_deterministic_and_covers_every_window(tmp_path: Path) -> None:
    stream = load_token_stream(_corpus(tmp_path), 10_000)
    a, b = SampleOrder(stream, 16, seed=1), SampleOrder(stream, 16, seed=1)
    n = a.num_windows
    wins = [a.window_of(i) for i in range(n)]
    assert sorted(wins) == list(range(n))
    assert wins == [b.window_of(i) for i in range(n)]
    assert wins != [SampleOrder(stream, 16, seed=2).window_of(i) for i in range(n)]


def test_documents_ids_follow_eod(tmp_path: Path) -> None:
    stream = torch.tensor([1, 2, EOD_TOKEN, 3, 4, EOD_TOKEN, 5, 6, 7], dtype=torch.int16)
    batch = SampleOrder(stream, 8, seed=0).batch([0])
    assert batch.docs[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert batch.targets[0].tolist() == [2, EOD_TOKEN, 3, 4, EOD_TOKEN, 5, 6, 7]


def test_changing_dp_neither_skips_nor_repeats() -> None:
    gb = 8
    seen_dp2 = []
    for step in range(0, 5):
        for r in range(2):
            seen_dp2 += rank_samples(DataPosition(0, 0), step, gb, r, 2)
    # Resume at step 5 (sample 40) under dp=4, then dp=1.
    pos = DataPosition(step=5, sample=40)
    seen = list(seen_dp2)
    for step in range(5, 8):
        for r in range(4):
            seen += rank_samples(pos, step, gb, r, 4)
    pos = DataPosition(step=8, sample=64)
    for step in range(8, 10):
        seen += rank_samples(pos, step, gb, 0, 1)
    assert seen == list(range(80))


def test_a_folder_in_data_paths_means_every_file_under_it(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_bytes(b"aa")
    (tmp_path / "sub" / "b.txt").write_bytes(b"bbb")
    stream = load_token_stream([str(tmp_path)], 10_000)
    assert stream.tolist() == [97, 97, EOD_TOKEN, 98, 98, 98, EOD_TOKEN]
