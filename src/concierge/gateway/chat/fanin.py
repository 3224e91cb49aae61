"""``n`` engine streams as one: the chunks of stream ``i`` become choice ``i``, usage is summed.

Each stream is opened and advanced by a thread of its own (a generator is only ever touched by
the thread that runs it); ``close`` asks them to stop after the chunk in flight and waits.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from concierge.gateway.chat.streaming import close_iterator

_END = object()
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class FanIn(Iterator[dict[str, Any]]):
    def __init__(self, openers: list[Callable[[], Any]]) -> None:
        self._items: queue.Queue[tuple[int, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._remaining = len(openers)
        self._usage = dict.fromkeys(_USAGE_KEYS, 0)
        self._template: dict[str, Any] | None = None
        self._finished = False
        self._threads = [
            threading.Thread(target=self._run, args=(i, opener), name=f"sse-fanin-{i}", daemon=True)
            for i, opener in enumerate(openers)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int, opener: Callable[[], Any]) -> None:
        last: Any = _END
        stream = None
        try:
            stream = opener()
            for chunk in stream:
                self._items.put((index, chunk))
                if self._stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001  (raised in the consumer's thread)
            last = exc
        finally:
            if stream is not None:
                try:
                    close_iterator(stream)
                except Exception:  # noqa: BLE001, S110  (closing must not mask the stream's own error)
                    pass
        self._items.put((index, last))

    def __iter__(self) -> FanIn:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._finished:
                raise StopIteration
            index, item = self._items.get()
            if item is _END:
                self._remaining -= 1
                if self._remaining == 0:
                    self._finished = True
                    base = {k: v for k, v in (self._template or {}).items() if k not in ("choices", "usage")}
                    return {**base, "choices": [], "usage": dict(self._usage)}
                continue
            if isinstance(item, BaseException):
                self.close()
                raise item
            usage = item.get("usage")
            if usage:
                for key in _USAGE_KEYS:
                    self._usage[key] += int(usage.get(key) or 0)
            choices = item.get("choices") or []
            if not choices:
                continue  # a usage-only chunk: summed above, sent once at the end
            self._template = self._template or item
            out = {k: v for k, v in item.items() if k != "usage"}
            out["choices"] = [{**c, "index": index} for c in choices]
            return out

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(10)
