"""The demo booking service and MCP server as real second processes on loopback, for connector tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx

from helpers.paths import ROOT
from helpers.server import free_port

SRC = ROOT / "src"
DEMO_DOMAINS = SRC / "concierge" / "demo_services" / "domains"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH", "")]))
    return env


class ServiceProcess:
    """``python -m <module> <args>`` on a free port, until stopped; ``ready`` is an HTTP path to poll."""

    def __init__(self, module: str, args: list[str], *, ready: str, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.module, self.args, self.ready = module, args, ready
        self.env = {**_env(), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ServiceProcess:
        args = [a.replace("{port}", str(self.port)) for a in self.args]
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, *args], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}")
            try:
                httpx.request("GET" if self.ready != "/mcp" else "POST", self.url + self.ready, timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.module} did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def admin(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The HTTP service's fault and stats routes (started with --faults)."""
        if body is None:
            return httpx.get(f"{self.url}/_admin/{path}", timeout=5).json()
        return httpx.post(f"{self.url}/_admin/{path}", json=body, timeout=5).json()


def homestay_api(port: int | None = None) -> ServiceProcess:
    return ServiceProcess("concierge.demo_services.homestay_api", ["--port", "{port}", "--faults", "--token", "demo"],
                          ready="/openapi.json", port=port)


def homestay_mcp_http(env: dict[str, str] | None = None) -> ServiceProcess:
    return ServiceProcess("concierge.demo_services.homestay_mcp", ["--http", "--port", "{port}"], ready="/mcp",
                          env=env)
