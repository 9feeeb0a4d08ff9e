"""The Hugging Face Llama layout: config.json, tensor names, the q/k permutation, safetensors files.

The trainer's model computes the same function as transformers' `LlamaForCausalLM`
once the weights are renamed and the query and key projections are permuted:
`apply_rope` rotates interleaved pairs (x[2i], x[2i+1]) as Meta's reference code
does, while transformers rotates the two halves of each head. Permuting the output
rows of wq and wk (per head: even rows first, then odd rows) turns one into the
other; without it the logits silently differ. Plain PyTorch and `safetensors`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trainer.model import ModelArgs, Transformer
from trainer.tokenizer import EOD_TOKEN

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5000 * 1024**2
"""About transformers' `save_pretrained` default shard size (5 GB)."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_LAYER_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")

SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size", "head_dim")
"""config.json fields that fix the tensor shapes; a folder to start from must agree on all of them."""


class HFFormatError(ValueError):
    """A Hugging Face folder or state that does not fit the model; the message is one line."""


def hf_name(fqn: str) -> str:
    """transformers' tensor name for a parameter of `Transformer`."""
    if fqn in _TOP_NAMES:
        return _TOP_NAMES[fqn]
    m = _LAYER_RE.match(fqn)
    if m is None or m.group(2) not in _LAYER_NAMES:
        raise HFFormatError(f"no Hugging Face name for parameter {fqn!r}")
    return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"


def permute_for_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Interleaved-pair RoPE rows (Meta) -> rotate-half rows (transformers), per head."""
    out_dim, in_dim = w.shape
    return w.reshape(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def permute_from_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `permute_for_hf`."""
    out_dim, in_dim = w.shape
    return w.reshape(n_heads, 2, out_dim // n_heads // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def _qk_heads(fqn: str, args: ModelArgs) -> int | None:
    if fqn.endswith("attention.wq.weight"):
        return args.n_heads
    if fqn.endswith("attention.wk.weight"):
        return args.kv_heads
    return None


def to_hf(state: dict[str, torch.Tensor], args: ModelArgs, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The trainer's full (unsharded) model state -> transformers' names, permuted, in `dtype`."""
    out: dict[str, torch.Tensor] = {}
    for fqn, t in state.items():
        heads = _qk_heads(fqn, args)
        t = permute_for_hf(t, heads) if heads else t
        out[hf_name(fqn)] = t.detach().to(dtype).contiguous()
    return out


def hf_config(args: ModelArgs, dtype: torch.dtype) -> dict[str, Any]:
    """config.json for `LlamaForCausalLM` with the trainer model's dimensions."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.ffn_hidden,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": args.max_seq_len,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "vocab_size": args.vocab_size,
        "tie_word_embeddings": False,
        "torch_dtype": _dtype_name(dtype),
        # Byte-level tokens: documents end with EOD; nothing marks their start.
        "bos_token_id": None,
        "eos_token_id": EOD_TOKEN,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
    }


def generation_config() -> dict[str, Any]:
    """Generation stops at the end-of-document token."""
    return {"_from_model_config": True, "bos_token_id": None, "eos_token_id": EOD_TOKEN}


def _dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Greedy split in the model's order; a tensor larger than the limit gets a shard of its own."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    return shards


def write_hf_folder(folder: Path, state: dict[str, torch.Tensor], args: ModelArgs, *, dtype: torch.dtype,
                    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
    """Write config, generation config and weights into an existing folder; returns the weight files."""
    tensors = to_hf(state, args, dtype)
    shards = _shards(tensors, max_shard_bytes)
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(folder / WEIGHTS_FILE), metadata=meta)
        files = [WEIGHTS_FILE]
    else:
        files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        weight_map: dict[str, str] = {}
        for fname, shard in zip(files, shards, strict=True):
            save_file(shard, str(folder / fname), metadata=meta)
            weight_map.update(dict.fromkeys(shard, fname))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        _write_json(folder / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
    _write_json(folder / CONFIG_FILE, hf_config(args, dtype))
    _write_json(folder / GENERATION_CONFIG_FILE, generation_config())
    return files


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


# ---- reading a folder back ---------------------------------------------------

def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise HFFormatError(f"{folder}: no {CONFIG_FILE}")
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise HFFormatError(f"{path}: not valid JSON") from None
    if not isinstance(cfg, dict):
        raise HFFormatError(f"{path}: not a JSON object")
    return cfg


def config_errors(cfg: dict[str, Any], args: ModelArgs) -> list[str]:
    """Why a config.json cannot start a model with `args` (empty when it can)."""
    want = hf_config(args, torch.float32)
    have = dict(cfg)
    have.setdefault("num_key_value_heads", have.get("num_attention_heads"))
    if "head_dim" not in have and have.get("hidden_size") and have.get("num_attention_heads"):
        have["head_dim"] = have["hidden_size"] // have["num_attention_heads"]
    errs = [f"{k} is {have.get(k)} in config.json, {want[k]} in the model section"
            for k in SHAPE_KEYS if have.get(k) != want[k]]
    if have.get("attention_bias") or have.get("mlp_bias"):
        errs.append("config.json has bias terms, which the model does not have")
    if have.get("hidden_act", "silu") != "silu":
        errs.append(f"hidden_act is {have['hidden_act']} in config.json; the model uses silu")
    rope = have.get("rope_scaling") or have.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type != "default":
        errs.append(f"config.json uses {rope_type} RoPE scaling, which the model does not implement")
    return errs


def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> file holding it, from the index when the weights are sharded."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise HFFormatError(f"{index}: no weight_map") from None
        return {name: folder / fname for name, fname in weight_map.items()}
    single = folder / WEIGHTS_FILE
    if not single.is_file():
        raise HFFormatError(f"{folder}: neither {WEIGHTS_FILE} nor {INDEX_FILE}")
    with safe_open(str(single), framework="pt") as f:
        return dict.fromkeys(f.keys(), single)


def _read_tensors(files: dict[str, Path], names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    by_file: dict[Path, list[str]] = {}
    for n in names:
        by_file.setdefault(files[n], []).append(n)
    for path, group in by_file.items():
        with safe_open(str(path), framework="pt") as f:
            for n in group:
                yield n, f.get_tensor(n)


def _sources(folder: Path, cfg: dict[str, Any], fqns: list[str], files: dict[str, Path]) -> dict[str, str]:
    """Parameter name -> tensor name in the folder (the embedding for a tied output layer)."""
    source: dict[str, str] = {}
    for fqn in fqns:
        name = hf_name(fqn)
        if name not in files and fqn == "output.weight" and cfg.get("tie_word_embeddings"):
            name = _TOP_NAMES["tok_embeddings.weight"]
        if name not in files:
            raise HFFormatError(f"{folder}: no tensor {name} (for {fqn})")
        source[fqn] = name
    return source


def check_folder(folder: Path, args: ModelArgs) -> None:
    """Raise HFFormatError unless the folder can start a model with `args`.

    Reads config.json and the safetensors headers only, not the tensors.
    """
    cfg = read_config(folder)
    errs = config_errors(cfg, args)
    if errs:
        raise HFFormatError(f"{folder}: {errs[0]}")
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in Transformer(args).state_dict().items()}
    files = _weight_files(folder)
    source = _sources(folder, cfg, list(shapes), files)
    for fqn, name in source.items():
        with safe_open(str(files[name]), framework="pt") as f:
            have = tuple(f.get_slice(name).get_shape())
        if have != shapes[fqn]:
            raise HFFormatError(f"{folder}: {name} has shape {have}, the model needs {shapes[fqn]}")


@torch.no_grad()
def load_hf_into(model: Transformer, folder: Path) -> int:
    """Copy the weights of a Hugging Face Llama folder into `model`; returns how many tensors.

    Call before parallelising: `model` is plain, possibly cut to some pipeline stages
    (only the parameters it holds are read). q/k are permuted back to interleaved
    pairs. With tie_word_embeddings the output layer takes the embedding.
    """
    cfg = read_config(folder)
    errs = config_errors(cfg, model.args)
    if errs:
        raise HFFormatError(f"{folder}: {errs[0]}")
    files = _weight_files(folder)
    params = dict(model.named_parameters())
    source = _sources(folder, cfg, list(params), files)
    loaded = 0
    for name, t in _read_tensors(files, sorted(set(source.values()))):
        for fqn in (f for f, n in source.items() if n == name):
            p = params[fqn]
            if tuple(t.shape) != tuple(p.shape):
                raise HFFormatError(f"{folder}: {name} has shape {tuple(t.shape)}, the model needs {tuple(p.shape)}")
            heads = _qk_heads(fqn, model.args)
            p.copy_(permute_from_hf(t, heads) if heads else t)
            loaded += 1
    return loaded
