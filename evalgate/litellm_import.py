"""litellm, imported once on first use and configured for offline use.

Shared by the eval engine and the runtime policy (so it imports only the standard library):
pytest loads evalgate into every run and applications import ``evalgate.runtime``, and
``import litellm`` takes seconds, so neither imports it before a call needs it.
"""

from __future__ import annotations

import os
from typing import Any

_litellm: Any = None


def litellm_module() -> Any:
    """The litellm module: bundled price map (no download at import), no banner, no telemetry."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        _litellm = litellm
    return _litellm
