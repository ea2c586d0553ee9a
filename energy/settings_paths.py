"""Paths every module may need without importing the whole settings object."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
