"""Shared kernel of the energy platform: settings, CLI, local stack, migrations, observability."""

__version__ = "0.1.0"
