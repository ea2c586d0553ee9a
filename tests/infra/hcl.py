"""python-hcl2 keeps HCL quoting (keys and strings arrive as '"name"'); these helpers give
plain dictionaries: {"resource": {type: {name: body}}, "variable": {name: body}, ...}."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2

from tests.infra.conftest import TERRAFORM_DIR

_META = {"__is_block__", "__comments__", "__inline_comments__", "__start_line__", "__end_line__"}


def unquote(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            return value[1:-1]
        return value
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if k not in _META}
    return value


def load_dir(path: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {"resource": {}, "data": {}, "variable": {}, "locals": {}, "module": {}, "output": {}}
    for tf in sorted(path.glob("*.tf")):
        with tf.open() as fh:
            doc = unquote(hcl2.load(fh))
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    merged[kind].setdefault(rtype, {}).update(named)
        for kind in ("variable", "module", "output"):
            for block in doc.get(kind, []):
                merged[kind].update(block)
        for block in doc.get("locals", []):
            merged["locals"].update(block)
    return merged


def module(name: str) -> dict[str, Any]:
    return load_dir(TERRAFORM_DIR / "modules" / name)


def env(name: str) -> dict[str, Any]:
    return load_dir(TERRAFORM_DIR / "envs" / name)


def one(block: Any) -> dict[str, Any]:
    """A nested block parses as a list of one dict."""
    if isinstance(block, list):
        assert len(block) == 1, block
        return dict(block[0])
    return dict(block)
