"""Stand-in for ``scope.core.config``: where Scope keeps its models."""

from __future__ import annotations

import os
from pathlib import Path

MODELS_DIR_ENV_VAR = "DAYDREAM_SCOPE_MODELS_DIR"
DEFAULT_MODELS_DIR = "~/.daydream-scope/models"


def get_models_dir() -> Path:
    env_dir = os.environ.get(MODELS_DIR_ENV_VAR)
    if env_dir:
        return Path(env_dir).expanduser().resolve()
    return Path(DEFAULT_MODELS_DIR).expanduser().resolve()
