"""Versioned model artefacts: ``<model_dir>/<name>/<version>/{weights.pt, meta.json}`` and ``CURRENT``.

``meta.json`` holds the feature spec (:class:`ModelSpec`), the training metrics, the band scale
from calibration and the seed, so a forecast can always say which model made it.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from forecast.model.features import ModelSpec
from forecast.model.net import QuantileLSTM
from forecast.model.train import TrainResult

FEATURE_SPEC_VERSION = 1


class ModelLoadError(RuntimeError):
    pass


@dataclass
class LoadedModel:
    name: str
    version: str
    spec: ModelSpec
    net: QuantileLSTM
    band_scale: float
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"


def save_model(model_dir: Path, name: str, spec: ModelSpec, result: TrainResult, extra: dict[str, Any]) -> str:
    buf = io.BytesIO()
    torch.save(result.net.state_dict(), buf)
    weights = buf.getvalue()
    version = datetime.now(UTC).strftime("%Y%m%d") + "-" + hashlib.sha256(weights).hexdigest()[:10]
    target = model_dir / name / version
    target.mkdir(parents=True, exist_ok=True)
    (target / "weights.pt").write_bytes(weights)
    meta = {
        "name": name,
        "version": version,
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "spec": spec.to_json(),
        "band_scale": result.band_scale,
        "metrics": result.metrics,
        "created_at": datetime.now(UTC).isoformat(),
        **extra,
    }
    (target / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    (model_dir / name / "CURRENT").write_text(version + "\n")
    return version


def load_model(model_dir: Path, name: str) -> LoadedModel | None:
    """The current model of ``name``; None when none was trained; ModelLoadError when it is unusable."""
    current = model_dir / name / "CURRENT"
    if not current.exists():
        return None
    version = current.read_text().strip()
    folder = model_dir / name / version
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("feature_spec_version") != FEATURE_SPEC_VERSION:
            raise ModelLoadError(f"{name}-{version}: feature spec {meta.get('feature_spec_version')} not supported")
        spec = ModelSpec.from_json(meta["spec"])
        net = QuantileLSTM(spec.enc_features, spec.dec_features, spec.hidden)
        state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net.eval()
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{name}-{version}: {type(exc).__name__}: {exc}") from exc
    return LoadedModel(name, version, spec, net, float(meta.get("band_scale", 1.0)), meta)
