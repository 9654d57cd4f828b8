"""Where converted models, built corpora and cached features live."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SPEECHRL_CACHE``, default ``~/.cache/speechrl``."""
    return Path(os.environ.get("SPEECHRL_CACHE", Path.home() / ".cache" / "speechrl"))
