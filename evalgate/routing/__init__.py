"""Difficulty routing learned from the evals: features, the router model, its fitting.

``features`` and ``model`` are imported by applications through ``evalgate.runtime``:
numpy only (the MiniLM encoder loads on first use). ``fit`` and ``simulate`` are
offline-only (they use ``evalgate.stats.ltt``, hence scipy) and the runtime never imports
them.

The exported router carries a Learn-then-Test guarantee: with probability >= 1 - alpha,
its expected quality loss against always-large is at most ``max_loss``. It rests on
three things, each kept true by construction in :mod:`evalgate.routing.fit`: cases i.i.d.
(like the traffic), the score model fit on cases disjoint from those calibrating the
threshold, and the routed config evaluated by cross-fitting (each case decided by a
pipeline that never saw it). :mod:`evalgate.routing.simulate` checks the guarantee where
the truth is known.
"""
