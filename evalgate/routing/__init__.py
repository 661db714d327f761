"""Difficulty routing learned from the evals: features, the router model, its fitting.

``features`` and ``model`` are imported by applications through ``evalgate.runtime``:
numpy only (the MiniLM encoder loads on first use). ``fit`` is offline-only (it uses
``evalgate.stats.ltt``, hence scipy) and is never imported by the runtime.
"""
