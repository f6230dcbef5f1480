"""Atomic training checkpoints and model artifacts.

A checkpoint holds everything a restart needs to continue as if never stopped: model
and optimiser state, epoch and batch position in the epoch, global step, every rank's
RNG states, and the history so far. Rank 0 writes it to a temp file in the same folder,
fsyncs and renames it (a crash mid-write never leaves a half file under the real name),
then points ``latest.json`` at it with its SHA-256; loading verifies the hash, so a
corrupt or truncated file is refused with a clear :class:`CheckpointError`.

Model artifacts (``save_model`` / ``load_model``) follow the cross-stage contract:
``{"format": "hpcml-model/1", "arch", "model_config", "state_dict", "metrics",
"normalization", "input_shape": [1, 28, 28]}``.

Checkpoint cost at a real model's size: :func:`resnet50_checkpoint_bytes` counts
ResNet-50's weight and optimiser bytes from the project's own model, and
:func:`projected_checkpoint_s` divides them by a measured write rate. The result is a
projection (this run trains a small CNN), used for the termination grace period and the
Young/Daly checkpoint interval.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import numbers
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpcml import paths

CKPT_FORMAT = "hpcml-checkpoint/1"
MODEL_FORMAT = "hpcml-model/1"
KEEP = 2


#: Optimiser state kept per parameter, in parameter-sized copies: SGD with momentum keeps
#: the momentum buffer; Adam/AdamW keep the first and second moments.
OPTIMIZER_STATE_COPIES = {"sgd": 1, "adam": 2, "adamw": 2}
FLOAT32_BYTES = 4


class CheckpointError(RuntimeError):
    """A checkpoint or model file is missing, corrupt or of the wrong format."""


def _atomic_bytes(path: Path, data: bytes) -> None:
    paths.atomic_write_bytes(path, data)


def _to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch)."""
    import random

    import numpy as np

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically as ``ckpt-<step>.pt`` and point ``latest.json`` at it.

    Args:
        ckpt_dir: the run's checkpoint folder.
        state: must hold ``step`` (int); typically also ``model``, ``optimizer``,
            ``epoch``, ``batch``, ``rng`` (list per rank), ``history``.

    Returns:
        The checkpoint path. Older checkpoints beyond the last ``KEEP`` are removed.
    """
    if "step" not in state:
        raise ValueError("save_checkpoint: state needs a 'step'")
    ckpt_dir = Path(ckpt_dir)
    data = _to_bytes({"format": CKPT_FORMAT, **state})
    path = ckpt_dir / f"ckpt-{int(state['step']):08d}.pt"
    _atomic_bytes(path, data)
    pointer = {"path": path.name, "step": int(state["step"]), "sha256": hashlib.sha256(data).hexdigest(),
               "bytes": len(data)}
    paths.atomic_write_text(ckpt_dir / "latest.json", json.dumps(pointer, indent=2))
    for old in sorted(ckpt_dir.glob("ckpt-*.pt"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint ``latest.json`` points to, or None when there is none yet."""
    pointer = Path(ckpt_dir) / "latest.json"
    if not pointer.exists():
        return None
    try:
        info = json.loads(pointer.read_text(encoding="utf-8"))
        return Path(ckpt_dir) / info["path"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{pointer} is corrupt ({e}); delete it to start from scratch") from None


def load_checkpoint(path: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """Load and verify one checkpoint.

    Raises:
        CheckpointError: missing file, hash mismatch, unreadable or wrong format — the
            message names the file and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: SHA-256 differs from the one recorded in latest.json "
            f"({len(data)} bytes on disk); delete it (and latest.json) to restart from scratch")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{path} is not an hpcml checkpoint (format {CKPT_FORMAT!r} expected)")
    return obj


def resume_state(ckpt_dir: Path) -> dict[str, Any] | None:
    """The latest verified checkpoint of a run, or None to start from scratch."""
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        return None
    info = json.loads((Path(ckpt_dir) / "latest.json").read_text(encoding="utf-8"))
    return load_checkpoint(path, expected_sha256=info.get("sha256"))


# --- checkpoint size and time at ResNet-50's size ------------------------------------------
@functools.lru_cache(maxsize=1)
def _resnet50_params() -> int:
    from hpcml.train.models import count_params, make_model

    return count_params(make_model("resnet50"))


def resnet50_checkpoint_bytes(optimizer: str = "sgd") -> int:
    """Bytes of ResNet-50's float32 weights plus its optimiser state.

    The parameter count is that of the project's own ResNet-50 (:mod:`hpcml.train.models`,
    ImageNet head: 25,557,032 parameters); the optimiser adds ``OPTIMIZER_STATE_COPIES``
    parameter-sized copies (SGD with momentum: one; Adam/AdamW: two). BatchNorm running
    statistics and the pickle framing (well under 1 %) are not counted.

    Raises:
        ValueError: an optimiser this table does not know.
    """
    key = optimizer.lower()
    if key not in OPTIMIZER_STATE_COPIES:
        raise ValueError(f"resnet50_checkpoint_bytes: optimizer must be one of "
                         f"{sorted(OPTIMIZER_STATE_COPIES)}, got {optimizer!r}")
    return _resnet50_params() * FLOAT32_BYTES * (1 + OPTIMIZER_STATE_COPIES[key])


def projected_checkpoint_s(write_bytes_per_s: float, nbytes: int | None = None) -> float:
    """Seconds to write ``nbytes`` (default: ResNet-50 with SGD momentum) at a measured rate.

    A projection: it assumes the write rate measured on this run's (smaller) checkpoint
    holds at the larger size and ignores serialisation and the upload to shared storage.

    Raises:
        ValueError: the rate is not a positive finite number, or ``nbytes`` is negative.
    """
    if (not isinstance(write_bytes_per_s, numbers.Real) or isinstance(write_bytes_per_s, bool)
            or not math.isfinite(write_bytes_per_s) or write_bytes_per_s <= 0):
        raise ValueError(f"projected_checkpoint_s: write_bytes_per_s must be a positive number of "
                         f"bytes per second, got {write_bytes_per_s!r}")
    size = resnet50_checkpoint_bytes() if nbytes is None else int(nbytes)
    if size < 0:
        raise ValueError(f"projected_checkpoint_s: nbytes must be >= 0, got {nbytes!r}")
    return size / float(write_bytes_per_s)


# --- model artifacts ----------------------------------------------------------------
def save_model(model: nn.Module, model_config: dict, path: str | Path, metrics: dict,
               normalization: dict) -> Path:
    """Write the model artifact (contract format ``hpcml-model/1``) atomically.

    Args:
        model: the trained module.
        model_config: ``arch`` plus its ``make_model`` kwargs.
        path: target file, e.g. ``paths.models_dir() / "cnn" / "model.pt"``.
        metrics: final metrics to ship with the model.
        normalization: the dataset's ``{"scale", "mean", "std"}`` (for serving raw pixels).
    """
    if "arch" not in model_config:
        raise ValueError(f"save_model: model_config needs 'arch', got {sorted(model_config)}")
    cfg = {k: v for k, v in model_config.items() if k != "arch"}
    artifact = {
        "format": MODEL_FORMAT,
        "arch": model_config["arch"],
        "model_config": cfg,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "metrics": dict(metrics),
        "normalization": dict(normalization),
        "input_shape": [1, 28, 28],
    }
    path = Path(path)
    _atomic_bytes(path, _to_bytes(artifact))
    return path


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the model from an artifact; returns ``(model in eval mode, artifact dict)``.

    Raises:
        CheckpointError: missing/corrupt file or not an ``hpcml-model/1`` artifact.
    """
    from hpcml.train.models import make_model

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model artifact {path} does not exist: run notebooks/02_horovod_training.ipynb")
    try:
        art = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"model artifact {path} is corrupt ({type(e).__name__}: {e})") from None
    if not isinstance(art, dict) or art.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path} is not an {MODEL_FORMAT} artifact")
    model = make_model(art["arch"], **art["model_config"])
    model.load_state_dict(art["state_dict"])
    model.eval()
    return model, art
