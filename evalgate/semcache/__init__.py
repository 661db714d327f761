"""Semantic caching as an evaluated lever (issue 16): replay, certification, guard.

Offline and pure (numpy; scipy only inside the statistics). The runtime side lives in
:mod:`evalgate.runtime.semantic_cache`, which imports only :mod:`evalgate.semcache.guard`.
"""
