"""Hugging Face layout: the q/k permutation, DCP -> safetensors -> model round trip, transformers' logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from trainer.consolidate import CheckpointMismatchError, read_model_state
from trainer.hf import (
    CONFIG_FILE,
    INDEX_FILE,
    WEIGHTS_FILE,
    HFFormatError,
    load_hf_into,
    permute_for_hf,
    permute_from_hf,
    write_hf_folder,
)
from trainer.model import ModelArgs, Transformer, apply_rope, rope_tables
from trainer.pipeline import trim_to_stages

GQA = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=257, max_seq_len=64)
LOGIT_TOL = 1e-4


def _model(args: ModelArgs = GQA, seed: int = 5) -> Transformer:
    m = Transformer(args)
    m.init_weights(seed)
    return m


def _rotate_half_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE as transformers' Llama applies it: rotate the two halves of each head."""
    c = torch.cat([cos, cos], -1)[None, :, None, :]
    s = torch.cat([sin, sin], -1)[None, :, None, :]
    a, b = x.chunk(2, dim=-1)
    return x * c + torch.cat([-b, a], -1) * s


def test_permutation_turns_interleaved_rope_into_rotate_half() -> None:
    heads, head_dim, dim, seq = 3, 8, 16, 5
    w = torch.randn(heads * head_dim, dim)
    x = torch.randn(1, seq, dim)
    cos, sin = rope_tables(head_dim, torch.arange(seq), 10000.0)
    meta = apply_rope((x @ w.T).view(1, seq, heads, head_dim), cos, sin)
    hf = _rotate_half_rope((x @ permute_for_hf(w, heads).T).view(1, seq, heads, head_dim), cos, sin)
    # Same attention scores need the same rotated vectors up to a fixed reordering within each head.
    back = permute_from_hf(hf.reshape(seq, heads * head_dim).T, heads).T.reshape(1, seq, heads, head_dim)
    assert torch.allclose(back, meta, atol=1e-6)
    assert not torch.allclose(_rotate_half_rope((x @ w.T).view(1, seq, heads, head_dim), cos, sin), meta, atol=1e-3)
    assert torch.equal(permute_from_hf(permute_for_hf(w, heads), heads), w)


def _save_dcp(model: Transformer, path: Path) -> None:
    """A checkpoint shaped like the trainer's: model, optimizer and extra state under one id."""
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randint(0, 257, (1, 8)), torch.zeros(1, 8, dtype=torch.long), torch.arange(8)).sum().backward()
    opt.step()
    dcp.save({"model": model.state_dict(), "optim": opt.state_dict(), "extra": {"step": 1}},
             checkpoint_id=str(path), no_dist=True)


@pytest.mark.parametrize("shard_bytes", [None, 40_000])
def test_dcp_to_hf_to_model_is_bit_identical(tmp_path: Path, shard_bytes: int | None) -> None:
    src = _model()
    _save_dcp(src, tmp_path / "ckpt")
    state = read_model_state(tmp_path / "ckpt", GQA)
    kw = {} if shard_bytes is None else {"max_shard_bytes": shard_bytes}
    (tmp_path / "hf").mkdir()
    files = write_hf_folder(tmp_path / "hf", state, GQA, dtype=torch.float32, **kw)
    if shard_bytes is None:
        assert files == [WEIGHTS_FILE]
    else:
        assert len(files) > 1
        index = json.loads((tmp_path / "hf" / INDEX_FILE).read_text())
        assert set(index["weight_map"].values()) == set(files)
    dst = _model(seed=99)
    assert load_hf_into(dst, tmp_path / "hf") == len(state)
    for name, p in dst.state_dict().items():
        assert torch.equal(p, src.state_dict()[name]), name


def test_pipeline_stage_reads_only_its_tensors(tmp_path: Path) -> None:
    src = _model()
    write_hf_folder(tmp_path, src.state_dict(), GQA, dtype=torch.float32)
    last = _model(seed=99)
    trim_to_stages(last, [1], 2)
    assert load_hf_into(last, tmp_path) == len(last.state_dict())
    assert set(last.state_dict()) == {k for k in src.state_dict() if k.startswith(("layers.1.", "norm.", "output."))}
    for name, p in last.state_dict().items():
        assert torch.equal(p, src.state_dict()[name]), name


def test_tied_embeddings_fill_the_output_layer(tmp_path: Path) -> None:
    src = _model()
    write_hf_folder(tmp_path, src.state_dict(), GQA, dtype=torch.float32)
    from safetensors.torch import load_file, save_file

    tensors = load_file(tmp_path / WEIGHTS_FILE)
    del tensors["lm_head.weight"]
    save_file(tensors, tmp_path / WEIGHTS_FILE, metadata={"format": "pt"})
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    dst = _model(seed=99)
    with pytest.raises(HFFormatError, match="lm_head.weight"):
        load_hf_into(dst, tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**cfg, "tie_word_embeddings": True}))
    load_hf_into(dst, tmp_path)
    assert torch.equal(dst.output.weight, src.tok_embeddings.weight)


def test_shape_mismatch_is_one_line(tmp_path: Path) -> None:
    write_hf_folder(tmp_path, _model().state_dict(), GQA, dtype=torch.float32)
    other = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, vocab_size=257, max_seq_len=64)
    with pytest.raises(HFFormatError, match="num_key_value_heads is 2 in config.json, 4") as e:
        load_hf_into(Transformer(other), tmp_path)
    assert "\n" not in str(e.value)


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    _save_dcp(_model(), tmp_path / "ckpt")
    wider = ModelArgs(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=257, max_seq_len=64)
    with pytest.raises(CheckpointMismatchError, match="layers.2"):
        read_model_state(tmp_path / "ckpt", wider)


def test_bfloat16_export_halves_the_weights(tmp_path: Path) -> None:
    src = _model()
    for name, dtype in (("f32", torch.float32), ("b16", torch.bfloat16)):
        (tmp_path / name).mkdir()
        write_hf_folder(tmp_path / name, src.state_dict(), GQA, dtype=dtype)
    f32, b16 = (tmp_path / "f32" / WEIGHTS_FILE).stat().st_size, (tmp_path / "b16" / WEIGHTS_FILE).stat().st_size
    assert b16 < 0.6 * f32
    assert json.loads((tmp_path / "b16" / CONFIG_FILE).read_text())["torch_dtype"] == "bfloat16"


@pytest.fixture(scope="module")
def llama_cls() -> type:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM


def test_transformers_llama_gives_the_trainers_logits(tmp_path: Path, llama_cls: type) -> None:
    src = _model()
    write_hf_folder(tmp_path, src.state_dict(), GQA, dtype=torch.float32)
    hf = llama_cls.from_pretrained(tmp_path).eval()
    assert hf.config.num_key_value_heads == 2
    tokens = torch.randint(0, GQA.vocab_size, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = src(tokens, torch.zeros_like(tokens), torch.arange(tokens.shape[1]))
        theirs = hf(tokens).logits
    assert ours.shape == theirs.shape
    diff = float((ours - theirs).abs().max())
    assert diff <= LOGIT_TOL, diff
