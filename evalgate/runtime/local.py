"""Serving a policy's ``local/...`` models (evalgate's embedded llama.cpp models)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from evalgate.runtime.errors import PolicyError

if TYPE_CHECKING:
    from evalgate.runtime.callpath import Policy

LOCAL_PREFIX = "local/"


@contextlib.contextmanager
def serve_local_models(policy: Policy, *, threads: int = 2) -> Iterator[dict[str, str]]:
    """Starts a llama.cpp server for each local model the policy names; stops them after.

    Sets the policy's ``api_bases`` for them and yields that mapping::

        with serve_local_models(policy):
            policy.completion(feature="doc-qa", messages=...)
    """
    from evalgate.engine.local_models import MissingModelError
    from evalgate.engine.servers import LocalServerError, LocalServers

    names = sorted(
        {
            route.model[len(LOCAL_PREFIX) :]
            for feature in policy.features.values()
            for route in feature.routes
            if route.model.startswith(LOCAL_PREFIX)
        }
    )
    with tempfile.TemporaryDirectory(prefix="evalgate-local-") as logs:
        servers = LocalServers(Path(logs), threads=threads, parallel=1)
        try:
            running = servers.ensure(names)
        except (MissingModelError, LocalServerError) as exc:
            servers.stop_all()
            raise PolicyError(f"{policy.document.path}: {exc}") from None
        bases = {LOCAL_PREFIX + name: server.base_url for name, server in running.items()}
        policy.api_bases.update(bases)
        policy.batch_bases.update(
            {LOCAL_PREFIX + n: s.batch_url for n, s in running.items() if s.batch_url}
        )
        policy._endpoints.clear()
        try:
            yield bases
        finally:
            servers.stop_all()
