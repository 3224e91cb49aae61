#!/usr/bin/env python3
"""Time ``concierge demo --no-serve`` as a new user runs it: every output line stamped with the
seconds since start, on a fresh ``CONCIERGE_HOME`` (a new temporary folder unless one is set),
then the seconds to the first shop answer (the first ``shopper:`` line) and to the end, with the
load average at the start and the end.

    nice -n 10 .venv/bin/python scripts/time_demo.py [--python .venv/bin/python]

Run from the repository root; with ``PYTHONPATH=src`` it times this checkout's code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs concierge")
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("CONCIERGE_HOME", tempfile.mkdtemp(prefix="concierge-demo-"))
    env.setdefault("COLUMNS", "120")
    command = [args.python, "-c", "import sys; sys.argv=['concierge','demo','--no-serve','--port','0']; "
               "from concierge.cli import app; app()"]
    start_load = os.getloadavg()
    t0 = time.perf_counter()
    first_answer = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - t0
            if first_answer is None and line.startswith("shopper:"):
                first_answer = now
            print(f"[{now:7.1f}s] {line.rstrip()}", flush=True)
    print(json.dumps({
        "first_shop_answer_seconds": round(first_answer, 1) if first_answer is not None else None,
        "total_seconds": round(time.perf_counter() - t0, 1), "returncode": proc.returncode,
        "loadavg_start": start_load, "loadavg_end": os.getloadavg(), "home": env["CONCIERGE_HOME"],
    }))


if __name__ == "__main__":
    main()
