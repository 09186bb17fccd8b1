"""sdbench: GPU performance and energy benchmarks for Stable Diffusion inference."""

from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# Read before torch is imported: torch may fill this variable with its own default later.
USER_INDUCTOR_CACHE_DIR: str | None = _os.environ.get("TORCHINDUCTOR_CACHE_DIR")
