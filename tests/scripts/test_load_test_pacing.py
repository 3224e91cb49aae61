"""The load client's open loop (``scripts/load_test.py --rate R``) starts request i at i / R.

Its latency figures are the gateway's only if the client spreads its requests evenly: a client that
sends in bursts measures its own bursts' queueing. With 16 workers and a server that takes 40 ms,
the workers used to read the same request number, sleep to the same slot and send together.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "load_test.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("load_test_script", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class _SlowServer:
    """A client whose every request takes 40 ms and records when it started."""

    def __init__(self, starts: list[float]) -> None:
        self.starts = starts

    async def post(self, route: str, body: bytes, key: str) -> tuple[int, bytes]:
        self.starts.append(time.perf_counter())
        await asyncio.sleep(0.04)
        return 200, b"{}"


def test_open_loop_starts_requests_at_their_own_slots() -> None:
    load_test = _load_script()
    rate, workers, per_worker = 200.0, 16, 4
    starts: list[float] = []

    async def drive() -> None:
        run = load_test.Run(rate=rate)
        run.paced_from = time.perf_counter()
        client = _SlowServer(starts)

        async def worker() -> None:
            for _ in range(per_worker):
                await load_test.post(client, run, "/v1/chat/completions", {}, "ck-test")

        await asyncio.gather(*(worker() for _ in range(workers)))

    asyncio.run(drive())
    starts.sort()
    n = workers * per_worker
    assert len(starts) == n
    # Evenly paced, 5 ms apart: the whole run spans about (n - 1) / rate, and no 2.5 ms window holds
    # more than a few starts (the bursty client sent 16 within a millisecond, then waited).
    span = starts[-1] - starts[0]
    assert span >= 0.8 * (n - 1) / rate
    most_in_window = max(sum(1 for t in starts[i:] if t - s < 0.0025) for i, s in enumerate(starts))
    assert most_in_window <= 3, most_in_window
