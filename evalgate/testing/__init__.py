"""Test helpers for evalgate: a real, fault-injecting OpenAI-compatible HTTP server.

Re-exports are lazy so that ``python -m evalgate.testing.fake_openai`` does not import the
module twice (runpy warns when a package ``__init__`` already imported the ``-m`` target).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalgate.testing.fake_openai import FakeOpenAIServer, make_model, parse_model

__all__ = ["FakeOpenAIServer", "make_model", "parse_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from evalgate.testing import fake_openai

        return getattr(fake_openai, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
