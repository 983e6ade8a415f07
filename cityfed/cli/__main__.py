"""``python -m cityfed.cli``: the same as the ``cityfed`` console script."""

from __future__ import annotations

from cityfed.cli.main import run

run()
