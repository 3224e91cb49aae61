"""`concierge demo`'s booking service does not outlive the demo, even when the demo is sent SIGTERM.

A child process enters the demo's own context manager (``commands.demo._booking_service``), prints
the service's pid and url, and waits; the test checks the service answers, sends the child SIGTERM,
and checks the child exits and the service is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

CHILD = """
import json, time
from concierge.commands.demo import _booking_service
with _booking_service(True) as service:
    print(json.dumps({"pid": service[0].pid, "url": service[1]}), flush=True)
    while True:
        time.sleep(0.1)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped by its dead parent's reaper) counts as gone.
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        return stat.read().split()[2] == "Z"


def test_sigterm_to_the_demo_stops_its_booking_service() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        started = json.loads(child.stdout.readline())
        deadline = time.monotonic() + 60
        while True:  # the service is up (it answers its OpenAPI document)
            try:
                if httpx.get(started["url"] + "/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the booking service did not start"
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 15
        while not _gone(started["pid"]):
            assert time.monotonic() < deadline, "the booking service outlived the demo"
            time.sleep(0.1)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
