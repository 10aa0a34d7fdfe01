"""TrainState <-> a checkpoint directory. Written atomically; read with weights_only=True (no pickled code runs)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from gan import storage
from gan.state import TrainState

STATE_FILE = "train_state.pt"
GENERATOR_FILE = "generator.pt"
FINAL_MODEL_DIR, BEST_MODEL_DIR = "model", "best"  # MLflow artifact folders: the last epoch's and the best one's G
META_FILE = "meta.json"


def _save_torch(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    storage.write_bytes(str(path), buffer.getvalue())


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


def save_generator(state: TrainState, path: str | Path, model_shape: dict[str, Any]) -> Path:
    """The generator alone (the EMA one when it is on), with the shape needed to rebuild it: the artifact users
    sample from."""
    path = Path(path)
    _save_torch({"model_shape": model_shape, "state_dict": state.sampler.state_dict()}, path)
    return path


def load_generator(path: str | Path) -> torch.nn.Module:
    """A generator saved by `save_generator` (e.g. an MLflow run's best/generator.pt), ready to sample from:
    `load_generator(p)(torch.randn(16, latent_dim))` gives 16 images in [-1, 1]."""
    from gan.models import Generator, ModelShape

    saved = torch.load(path, map_location="cpu", weights_only=True)
    generator = Generator(ModelShape(**saved["model_shape"]))
    generator.load_state_dict(saved["state_dict"])
    return generator.eval()
