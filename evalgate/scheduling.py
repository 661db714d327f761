"""Spreading items over xdist workers so each worker can prefetch its own calls.

The engine gets its concurrency by submitting many calls before pytest reaches their
items. A worker can only do that for items it knows it will run, so evalgate items are
split into one shard per worker by a stable hash of their node id, and xdist's
LoadScope scheduler hands each shard, whole, to one worker. No call is made twice.
"""

from __future__ import annotations

import zlib
from typing import Any

from evalgate.nodeid import is_eval_nodeid


def shard_of(nodeid: str, shards: int) -> int:
    return zlib.crc32(nodeid.encode("utf-8")) % max(1, shards)


def make_scheduler(config: Any, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class EvalgateScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if is_eval_nodeid(nodeid):
                return f"evalgate-shard-{shard_of(nodeid, self.numnodes)}"
            return str(super()._split_scope(nodeid))

    return EvalgateScheduling(config, log)
