"""TrainState <-> a checkpoint directory. Written atomically; read with weights_only=True (no pickled code runs)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from gan.shards import storage
from gan.training.state import TrainState

STATE_FILE = "train_state.pt"
META_FILE = "meta.json"


def _save_torch(obj: Any, path: Path) -> None:
    storage.write_with(str(path), lambda stream: torch.save(obj, stream))


def save_checkpoint(state: TrainState, directory: str | Path, meta: dict[str, Any]) -> Path:
    """Full state for resuming, plus meta (config, step) in readable JSON. meta.json is written last: a directory
    without it is incomplete and `load_checkpoint` refuses it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _save_torch(state.state_dict(), directory / STATE_FILE)
    storage.write_bytes(str(directory / META_FILE), json.dumps({**meta, "epoch": state.epoch, "step": state.step},
                                                               indent=2).encode())
    return directory


def load_checkpoint(state: TrainState, directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not (directory / META_FILE).exists():
        raise FileNotFoundError(f"checkpoint {directory} is incomplete (no {META_FILE}); resume from an older one")
    state.load_state_dict(torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True))
    return json.loads((directory / META_FILE).read_text())


def load_generator(directory: str) -> torch.nn.Module:
    """The generator that samples (the one its report's quality measurement chose, EMA or raw) from a checkpoint
    directory, local or s3://, in eval mode: `load_generator(d)(torch.randn(16, latent_dim))` gives 16 images in
    [-1, 1]. A run's logged models are the usual way to its generators (gan/tracking/registry.py); this reads a
    checkpoint found in Ray Train's storage (the MLflow run's tags checkpoint.latest and checkpoint.best name them)."""
    from gan.training.models import Generator, ModelShape

    try:
        meta = json.loads(storage.read_bytes(storage.join(directory, META_FILE)))
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory}: no {META_FILE}, so not a complete checkpoint of this job") from None
    if "model_shape" not in meta:
        raise ValueError(f"{directory}: a checkpoint from before model shapes were recorded in {META_FILE}; "
                         f"load a newer one")
    saved = torch.load(io.BytesIO(storage.read_bytes(storage.join(directory, STATE_FILE))), map_location="cpu",
                       weights_only=True)
    generator = Generator(ModelShape(**meta["model_shape"]))
    # The generator the run's measurement at this checkpoint chose (a checkpoint from before that choice: the EMA one
    # when the run had it), so the checkpoint samples as the model logged at its report does.
    sampled = meta.get("sampled_generator", "ema")
    generator.load_state_dict(saved["generator_ema"] if sampled == "ema" and "generator_ema" in saved
                              else saved["generator"])
    return generator.eval()
