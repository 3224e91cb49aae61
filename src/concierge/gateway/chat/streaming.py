"""How a chat stream's chunks reach the event loop from the engine's thread (the pumps)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

from concierge.models.engine import PENDING

log = logging.getLogger("concierge.gateway")

END = object()  # end-of-stream marker (StopIteration cannot cross a thread boundary)
_END = END


class ChunkInbox:
    """Where a stream's chunks reach the event loop from another thread (the pumps below)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._done = threading.Event()

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._inbox.put_nowait, item)
        except RuntimeError:  # the loop has closed (server shutting down): nobody is listening
            self._loop_closed()

    def _loop_closed(self) -> None:
        raise NotImplementedError

    async def next_batch(self) -> list[Any]:
        """Every chunk that is ready (at least one; waits for it)."""
        batch = [await self._inbox.get()]
        while not self._inbox.empty():
            batch.append(self._inbox.get_nowait())
        return batch

    @property
    def done(self) -> bool:
        return self._done.is_set()


class StreamPump(ChunkInbox):
    """Drains an engine's chunk iterator in one thread and hands chunks to the event loop.

    One thread per stream instead of a thread hop per token: on two cores the per-token hop cost
    several percent of generation speed. The iterator is only ever advanced and closed by the pump
    thread (a generator cannot be closed from another thread while it runs).
    """

    def __init__(self, stream: Iterator[dict[str, Any]]) -> None:
        super().__init__()
        self._stream = stream
        self._stopping = threading.Event()
        threading.Thread(target=self._run, name="sse-pump", daemon=True).start()

    def _loop_closed(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        last: Any = _END
        try:
            for chunk in self._stream:
                self._put(chunk)
                if self._stopping.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001  (delivered to the event loop, raised there)
            last = exc
        finally:
            try:
                close_iterator(self._stream)
            except Exception:  # noqa: BLE001  (closing a failed engine stream must not mask its error)
                log.debug("closing an engine stream failed", exc_info=True)
            self._done.set()
        self._put(last)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the pump to stop after the chunk in flight and wait until it has closed the stream."""
        self._stopping.set()
        self._done.wait(timeout)


class PushPump(ChunkInbox):
    """Advances a pushed stream in the engine's own thread and hands chunks to the event loop.

    The engine calls ``ready`` whenever a chunk has arrived; the stream is advanced there until it
    yields ``PENDING``. Compared with ``StreamPump`` this saves a thread and one thread hand-off
    per token. One lock makes sure only one thread advances (or closes) the stream at a time.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()  # re-entered when a failed hand-off stops the stream
        self._stream: Iterator[dict[str, Any]] | None = None

    def _loop_closed(self) -> None:
        self.stop()

    def attach(self, stream: Iterator[dict[str, Any]]) -> None:
        """Start delivering ``stream`` (chunks that arrived before this are waiting in it)."""
        with self._lock:
            self._stream = stream
        self.ready()

    def ready(self) -> None:
        if not self._lock.acquire(timeout=30):  # pragma: no cover - a consumer stuck for 30 s
            log.error("a pushed stream stayed locked for 30 s")
            return
        try:
            stream = self._stream
            if stream is None or self._done.is_set():
                return
            while True:
                try:
                    chunk = next(stream)
                except StopIteration:
                    last: Any = _END
                    break
                except BaseException as exc:  # noqa: BLE001  (delivered to the event loop, raised there)
                    last = exc
                    break
                if chunk is PENDING:
                    return
                self._put(chunk)
            self._done.set()
            close_iterator(stream)
        finally:
            self._lock.release()
        self._put(last)

    @property
    def attached(self) -> bool:
        return self._stream is not None

    def stop(self, timeout: float = 10.0) -> None:
        """Close the stream (stops generation) unless it has ended; waits for a delivery in progress."""
        if not self._lock.acquire(timeout=timeout):  # pragma: no cover
            return
        try:
            if not self._done.is_set():
                self._done.set()
                if self._stream is not None:
                    close_iterator(self._stream)
        finally:
            self._lock.release()


def as_iterator(stream: Any) -> Iterator[dict[str, Any]]:
    return stream if hasattr(stream, "__next__") else iter(stream)


def close_iterator(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()
