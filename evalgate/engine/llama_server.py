"""Child process entry point: one llama.cpp server (xllamacpp) for one local model.

Run as ``python -m evalgate.engine.llama_server --model PATH --alias NAME --port N``.
It lives in its own process so a native crash cannot take pytest down, and it dies with
its parent: the kernel sends it SIGTERM when the parent exits (PR_SET_PDEATHSIG), and a
watchdog thread checks the parent as a second line of defence.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the watchdog below still works

    def watchdog() -> None:
        while True:
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(1.0)

    # The parent may already be gone between fork and prctl.
    if os.getppid() != parent_pid:
        sys.exit(0)
    threading.Thread(target=watchdog, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    # The Files/Batches endpoints for this model (llama.cpp has none): see batch_local.
    parser.add_argument("--batch-port", type=int, default=0)
    args = parser.parse_args(argv)
    # Block the stop signals in every thread (the server's threads inherit the mask) so
    # sigwait below receives them and we exit in one place.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    _die_with_parent(args.parent_pid)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = args.alias
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    # No host-memory prompt cache: it restores any prompt seen before, so a config whose
    # prompt another config already sent (same case, other max_tokens) would get its
    # prompt processing free and look faster than it is. The slot still reuses the prefix
    # it holds from the previous request (the shared system prompt), as any server would.
    params.cache_ram_mib = 0
    server = xllamacpp.Server(params)  # serves in its own threads
    batches = None
    if args.batch_port:
        from evalgate.engine.batch_local import LocalBatchServer

        chat_url = f"http://127.0.0.1:{args.port}/v1/chat/completions"
        slots_url = f"http://127.0.0.1:{args.port}/slots"  # lines wait for an idle server
        batches = LocalBatchServer(
            chat_url, args.batch_port, args.parallel, slots_url, model=args.alias
        ).start()
    print(f"evalgate-llama-server ready port={args.port}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    if batches is not None:
        # A running batch would keep the model busy (and the server's shutdown waiting)
        # line after line: cancel it so no new line starts.
        batches.halt()
    del server
    os._exit(0)  # skip native destructors: the process is going away anyway


if __name__ == "__main__":
    main()
