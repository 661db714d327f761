"""Errors more than one layer raises (standard library only: the runtime imports it too)."""

from __future__ import annotations


class MissingModelError(RuntimeError):
    """A model's weights, or a library needed to run it, are not installed.

    Raised for the embedded local models (:mod:`evalgate.engine.local_models`) and for the
    embedding model (:mod:`evalgate.embeddings`); the message names what to install.
    """
