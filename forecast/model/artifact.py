"""Versioned model artefacts: ``<model_dir>/<name>/<version>/{weights.pt, meta.json}`` and ``CURRENT``.

``weights.pt`` holds the state of every ensemble member and the conformal band offsets; ``meta.json`` the
feature spec (:class:`ModelSpec`), the training and backtest metrics and the seed, so a forecast can
always say which model made it. Older versions stay on disk; ``CURRENT`` names the one in service.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forecast.model.features import ModelSpec
from forecast.model.net import QuantileLSTM
from forecast.model.train import ForecastModel, TrainResult

FEATURE_SPEC_VERSION = 2  # 2: residual over seasonal naive, ensemble, conformal offsets, optional day of year


class ModelLoadError(RuntimeError):
    pass


@dataclass
class LoadedModel:
    name: str
    version: str
    model: ForecastModel
    meta: dict[str, Any]

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"


def _weights_bytes(model: ForecastModel) -> bytes:
    buf = io.BytesIO()
    torch.save(
        {
            "members": [net.state_dict() for net in model.nets],
            "low_offset": torch.from_numpy(np.asarray(model.low_offset, dtype=np.float32)),
            "high_offset": torch.from_numpy(np.asarray(model.high_offset, dtype=np.float32)),
        },
        buf,
    )
    return buf.getvalue()


def save_model(
    model_dir: Path, name: str, result: TrainResult, extra: dict[str, Any], make_current: bool = True
) -> str:
    """Write a new version; it becomes CURRENT unless ``make_current`` is False (kept as a candidate)."""
    weights = _weights_bytes(result.model)
    version = datetime.now(UTC).strftime("%Y%m%d") + "-" + hashlib.sha256(weights).hexdigest()[:10]
    target = model_dir / name / version
    target.mkdir(parents=True, exist_ok=True)
    (target / "weights.pt").write_bytes(weights)
    meta = {
        "name": name,
        "version": version,
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "spec": result.model.spec.to_json(),
        "metrics": result.metrics,
        "created_at": datetime.now(UTC).isoformat(),
        **extra,
    }
    (target / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if make_current:
        set_current(model_dir, name, version)
    return version


def set_current(model_dir: Path, name: str, version: str) -> None:
    current = model_dir / name / "CURRENT"
    tmp = current.with_suffix(".tmp")
    tmp.write_text(version + "\n")
    tmp.replace(current)  # atomic: the service never reads a half-written name


def current_version(model_dir: Path, name: str) -> str | None:
    current = model_dir / name / "CURRENT"
    return current.read_text().strip() if current.exists() else None


def load_model(model_dir: Path, name: str, version: str | None = None) -> LoadedModel | None:
    """The current model of ``name`` (or ``version``); None when none was trained; ModelLoadError when unusable."""
    version = version or current_version(model_dir, name)
    if version is None:
        return None
    folder = model_dir / name / version
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("feature_spec_version") != FEATURE_SPEC_VERSION:
            raise ModelLoadError(f"{name}-{version}: feature spec {meta.get('feature_spec_version')} not supported")
        spec = ModelSpec.from_json(meta["spec"])
        state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
        nets = []
        for member in state["members"]:
            net = QuantileLSTM(spec.enc_features, spec.dec_features, spec.hidden, spec.patch)
            net.load_state_dict(member)
            net.eval()
            nets.append(net)
        if not nets:
            raise ModelLoadError(f"{name}-{version}: no ensemble member")
        low, high = state["low_offset"].numpy(), state["high_offset"].numpy()
        if low.shape != (spec.horizon,) or high.shape != (spec.horizon,):
            raise ModelLoadError(f"{name}-{version}: band offsets do not match the horizon")
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{name}-{version}: {type(exc).__name__}: {exc}") from exc
    return LoadedModel(name, version, ForecastModel(spec, nets, low, high), meta)
