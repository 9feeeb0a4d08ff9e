"""The model weights of one DCP checkpoint, whole, in one process.

DCP stores every tensor by fully qualified name with its global shape, whatever
layout wrote it (dp, tp, pp, cp shards), and reshards on load: asking for full
tensors in a process without a process group reads and joins every shard. Only
the model's tensors are read, not the optimizer state.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from trainer.model import ModelArgs, Transformer

MODEL_KEY = "model"
"""The checkpoint's top-level entry for the model state (see `Checkpointer._state`)."""


class CheckpointMismatchError(ValueError):
    """The checkpoint does not hold the model the job describes; one line for the user."""


def read_model_state(path: str | os.PathLike[str], args: ModelArgs) -> dict[str, torch.Tensor]:
    """Full tensors of the model described by `args`, in the dtype they were saved in.

    Raises CheckpointMismatchError when a parameter is missing or has another shape.
    """
    with torch.device("meta"):
        expected = Transformer(args).state_dict()
    stored = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    state: dict[str, torch.Tensor] = {}
    for fqn, t in expected.items():
        md = stored.get(f"{MODEL_KEY}.{fqn}")
        if not isinstance(md, TensorStorageMetadata):
            raise CheckpointMismatchError(f"{path}: no tensor for parameter {fqn}")
        if tuple(md.size) != tuple(t.shape):
            raise CheckpointMismatchError(
                f"{path}: {fqn} has shape {tuple(md.size)}, the job's model needs {tuple(t.shape)}")
        state[fqn] = torch.empty(tuple(md.size), dtype=md.properties.dtype)
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
        dcp.load({MODEL_KEY: state}, checkpoint_id=str(path), no_dist=True)
    return state
