from __future__ import annotations

import ast
from pathlib import Path

import torch

from trainer.model import ModelArgs, Transformer, document_causal_mask
from trainer.tokenizer import EOD_TOKEN

ARGS = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=257, max_seq_len=64)


def _model() -> Transformer:
    m = Transformer(ARGS)
    m.init_weights(3)
    return m


def test_shapes_and_param_count() -> None:
    m = _model()
    tokens = torch.randint(0, 256, (2, 16))
    out = m(tokens, torch.zeros(2, 16, dtype=torch.long), torch.arange(16))
    assert out.shape == (2, 16, 257)
    assert sum(p.numel() for p in m.parameters()) == ARGS.num_params()


def test_gqa_projection_sizes() -> None:
    m = _model()
    attn = m.layers["0"].attention
    assert attn.wq.weight.shape == (32, 32)
    assert attn.wk.weight.shape == (16, 32)  # 2 kv heads x head_dim 8


def test_init_is_deterministic_and_layer_independent() -> None:
    a, b = _model(), _model()
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), na
    # A stage that keeps only layer 1 gets the same weights for it.
    c = Transformer(ARGS)
    del c.layers["0"]
    c.init_weights(3)
    assert torch.equal(c.layers["1"].attention.wq.weight, a.layers["1"].attention.wq.weight)


def test_attention_does_not_cross_documents() -> None:
    m = _model()
    tokens = torch.randint(0, 256, (1, 16))
    tokens[0, 5] = EOD_TOKEN
    is_eod = (tokens == EOD_TOKEN).long()
    docs = torch.cumsum(is_eod, 1) - is_eod
    pos = torch.arange(16)
    base = m(tokens, docs, pos)
    changed = tokens.clone()
    changed[0, :5] = (changed[0, :5] + 1) % 256  # edit only the first document
    out = m(changed, docs, pos)
    assert torch.allclose(base[0, 6:], out[0, 6:], atol=1e-6)
    assert not torch.allclose(base[0, :5], out[0, :5])


def test_mask_is_causal_within_a_document() -> None:
    docs = torch.tensor([[0, 0, 1, 1]])
    pos = torch.arange(4)
    mask = document_causal_mask(docs, docs, pos, pos)[0, 0]
    assert mask.tolist() == [[True, False, False, False], [True, True, False, False],
                             [False, False, True, False], [False, False, True, True]]


def test_model_file_knows_nothing_of_parallelism() -> None:
    src = (Path(__file__).resolve().parents[2] / "trainer" / "model.py").read_text()
    mods = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    assert not any("distributed" in m for m in mods), mods


def test_trainer_does_not_import_ray_or_orchestrator() -> None:
    root = Path(__file__).resolve().parents[2] / "trainer"
    for f in root.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                assert not n.startswith(("ray", "orchestrator", "health")), f"{f.name} imports {n}"


def test_block_mask_attention_matches_the_dense_mask() -> None:
    """The FlexAttention block mask (CUDA's path) admits exactly what the dense mask does, here for a
    context-parallel rank's queries (a zigzag subset) over every key; eager FlexAttention runs on the CPU."""
    from torch.nn.attention.flex_attention import flex_attention

    from trainer.context_parallel import gathered_indices, zigzag_indices
    from trainer.model import document_block_mask, sdpa_attention

    g = torch.Generator().manual_seed(5)
    seq, heads, hd = 32, 2, 8
    docs = torch.cumsum((torch.rand(2, seq, generator=g) < 0.15).long(), 1)
    q_idx, kv_idx = zigzag_indices(seq, 2, 1), gathered_indices(seq, 2)
    q = torch.randn(2, heads, len(q_idx), hd, generator=g)
    k, v = (torch.randn(2, heads, seq, hd, generator=g) for _ in range(2))
    dense = sdpa_attention(q, k, v, document_causal_mask(docs[:, q_idx], docs[:, kv_idx], q_idx, kv_idx))
    block = flex_attention(q, k, v, block_mask=document_block_mask(docs[:, q_idx], docs[:, kv_idx], q_idx, kv_idx))
    torch.testing.assert_close(block, dense, rtol=1e-5, atol=1e-5)


def test_cpu_uses_the_dense_mask() -> None:
    from trainer.model import uses_block_mask

    assert not uses_block_mask(torch.device("cpu")) and uses_block_mask(torch.device("cuda"))
