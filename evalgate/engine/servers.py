"""Starts and stops the llama.cpp servers of the local models a run needs.

Only the pytest controller calls this (side effects live on the controller). Each server
is a child process on 127.0.0.1 at a free port; :meth:`LocalServers.stop_all` stops them
by PID, and the children also die on their own if the controller is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from evalgate.engine.local_models import MissingModelError, lookup, model_path

HEALTH_TIMEOUT_S = 180.0


class LocalServerError(RuntimeError):
    """A local model server failed to start (message includes its last output)."""


@dataclass(frozen=True, slots=True)
class RunningServer:
    name: str
    pid: int
    port: int
    batch_port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def batch_url(self) -> str | None:
        """The model's Files/Batches endpoints (:mod:`evalgate.engine.batch_local`)."""
        return f"http://127.0.0.1:{self.batch_port}/v1" if self.batch_port else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return bool(json.loads(resp.read()).get("status") == "ok")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_xllamacpp() -> None:
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:
        raise MissingModelError(
            "local models need the llama.cpp server; run: pip install xllamacpp==2026.10.11549"
        )


class LocalServers:
    """The running local model servers of one pytest session."""

    def __init__(self, log_dir: Path, threads: int = 2, parallel: int = 2) -> None:
        self.log_dir = log_dir
        self.threads = threads
        self.parallel = parallel
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.running: dict[str, RunningServer] = {}

    def ensure(self, names: Iterable[str]) -> dict[str, RunningServer]:
        """Starts a server for each named model not yet running; waits until all are healthy."""
        wanted = [n for n in dict.fromkeys(names) if n not in self.running]
        if not wanted:
            return self.running
        check_xllamacpp()
        paths = {name: model_path(name) for name in wanted}  # may raise MissingModelError
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pending: dict[str, tuple[subprocess.Popen[bytes], int, Path, int]] = {}
        for name in wanted:
            lookup(name)
            port, batch_port = free_port(), free_port()
            log = self.log_dir / f"server-{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "evalgate.engine.llama_server",
                        "--model",
                        str(paths[name]),
                        "--alias",
                        name,
                        "--port",
                        str(port),
                        "--threads",
                        str(self.threads),
                        "--parallel",
                        str(self.parallel),
                        "--parent-pid",
                        str(os.getpid()),
                        "--batch-port",
                        str(batch_port),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self._procs[name] = proc
            pending[name] = (proc, port, log, batch_port)
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while pending:
            for name, (proc, port, log, batch_port) in list(pending.items()):
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    self.stop_all()
                    raise LocalServerError(
                        f"local/{name} server exited with status {proc.returncode}: "
                        + " | ".join(tail)
                    )
                if _healthy(port):
                    self.running[name] = RunningServer(name, proc.pid, port, batch_port)
                    del pending[name]
            if pending and time.monotonic() > deadline:
                self.stop_all()
                raise LocalServerError(
                    f"local model server(s) {', '.join(pending)} not healthy after "
                    f"{HEALTH_TIMEOUT_S:.0f} s; see {self.log_dir}"
                )
            if pending:
                time.sleep(0.2)
        return self.running

    def stop_all(self) -> None:
        """Stops every server by PID: SIGTERM, then SIGKILL after 10 s."""
        for proc in self._procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()
        self.running.clear()
