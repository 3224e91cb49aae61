"""SASRec served with onnxruntime: the trained ensemble as one ONNX file, loaded without torch.

The file (written by :mod:`concierge.shop.recommend.export`, training extra) holds every ensemble
member's network behind one input, ``seq`` (1 x max_len item ids, left-padded with 0, id = item index
+ 1), and one output, ``scores`` (1 x members x items: each member's logits for the next item). Its
``concierge.recsys`` metadata is JSON: the item vocabulary (product ids, in model index order),
``max_len``, the blend weight chosen on validation and the co-occurrence helper's parameters.

:class:`OnnxSASRec` scores exactly as :class:`~concierge.shop.recommend.blend.Ensemble` does (mean of
standardised member logits), so ``Blend(OnnxSASRec, helper)`` with the stored weight gives the scores
the evaluation gave. :class:`ModelSlot` watches the file and reloads it when it changes (the trainer
replaces it atomically), so a refit model is served without a restart.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from concierge import config
from concierge.shop.recommend.blend import standardise

FORMAT = 1
META_KEY = "concierge.recsys"
FILE_NAME = "sasrec.onnx"
log = logging.getLogger(__name__)


def recommender_path(tenant: str, catalog: str) -> Path:
    """Where a catalogue's served model lives: ``CONCIERGE_HOME/recommenders/<tenant>/<catalog>/sasrec.onnx``."""
    for part in (tenant, catalog):
        if not part or "/" in part or "\\" in part or part in (".", ".."):
            raise ValueError(f"bad recommender name part {part!r}")
    return config.home() / "recommenders" / tenant / catalog / FILE_NAME


@dataclass(frozen=True)
class ModelInfo:
    """What the file's metadata says about the model."""

    items: tuple[str, ...]
    max_len: int
    members: int
    weight: float  # the co-occurrence share, chosen on validation NDCG@10
    helper: dict[str, Any]  # ItemKNN parameters of the co-occurrence part
    extra: dict[str, Any]  # trained_at, interactions, validation figures ...

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(
                f"unsupported recommender file format {data.get('format')!r} (expected {FORMAT})"
            )
        known = {"format", "items", "max_len", "members", "weight", "helper"}
        return cls(
            items=tuple(str(i) for i in data["items"]),
            max_len=int(data["max_len"]),
            members=int(data["members"]),
            weight=float(data["weight"]),
            helper=dict(data.get("helper") or {}),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "items": list(self.items),
                "max_len": self.max_len,
                "members": self.members,
                "weight": self.weight,
                "helper": self.helper,
                **self.extra,
            }
        )


class OnnxSASRec:
    """The exported SASRec ensemble behind the ``Recommender`` scoring interface (``score`` only)."""

    name = "sasrec-onnx"

    def __init__(self, path: Path | str) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one shopper at a time; the server has other work
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        meta = self._session.get_modelmeta().custom_metadata_map
        if META_KEY not in meta:
            raise ValueError(f"{self.path} is not a concierge recommender (no {META_KEY} metadata)")
        self.info = ModelInfo.from_json(meta[META_KEY])
        self.n_items = len(self.info.items)
        self.index = {pid: i for i, pid in enumerate(self.info.items)}
        self._lock = threading.Lock()

    def member_scores(self, history: Sequence[int] | np.ndarray) -> np.ndarray:
        """Raw logits (members x items) for one history of model item indices (oldest first)."""
        length = self.info.max_len
        seq = np.zeros((1, length), dtype=np.int64)
        tail = np.asarray(history, dtype=np.int64)[-length:] + 1
        if len(tail):
            seq[0, length - len(tail) :] = tail
        with self._lock:  # one run at a time per session keeps the thread settings honest
            (out,) = self._session.run(["scores"], {"seq": seq})
        return np.asarray(out[0], dtype=np.float32)

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """The ensemble's scores (mean of standardised member logits); zeros for an empty history."""
        out = np.zeros((len(histories), self.n_items), dtype=np.float64)
        for row, history in enumerate(histories):
            if len(history):
                members = self.member_scores(history).astype(np.float64)
                out[row] = np.mean([standardise(m[None])[0] for m in members], axis=0)
        return out


class ModelSlot:
    """The served model of one catalogue, reloaded when its file changes (checked on each ``current()``).

    The trainer writes a temporary file and ``os.replace``-s it over the old one, so a reader sees the
    old file or the new one, never half of either. A file that fails to load is logged and the
    previous model kept; a removed file stops serving (co-occurrence only).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._model: OnnxSASRec | None = None
        self.version = 0  # bumped on every (re)load; callers key caches on it

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> OnnxSASRec | None:
        stamp = self._stat()
        if stamp == self._stamp:
            return self._model
        with self._lock:
            if stamp == self._stamp:
                return self._model
            if stamp is None:
                self._model, self._stamp = None, None
                self.version += 1
                return None
            try:
                model = OnnxSASRec(self.path)
            except Exception as exc:  # a bad file must not take the shop down
                log.warning("recommender %s not loaded, keeping the previous one: %s", self.path, exc)
                self._stamp = stamp
                return self._model
            self._model, self._stamp = model, stamp
            self.version += 1
            log.info("recommender %s loaded (%d items)", self.path, model.n_items)
            return model
