"""Export a fitted SASRec (one model, an ensemble, or either blended with ItemKNN) to one ONNX file.

Needs the training extra (torch, onnx); the file is served without torch by
:mod:`concierge.shop.recommend.serving`. The file is written next to its destination and moved over it
with ``os.replace``, so a server watching the path never reads a partial file.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from concierge.shop.recommend.base import Recommender
from concierge.shop.recommend.baselines import ItemKNN
from concierge.shop.recommend.blend import Blend, Ensemble
from concierge.shop.recommend.sasrec import TORCH_MISSING, SASRec, _torch
from concierge.shop.recommend.serving import META_KEY, ModelInfo

OPSET = 17


def _parts(model: Recommender) -> tuple[list[SASRec], float, dict[str, Any]]:
    """The SASRec members, the blend weight and the ItemKNN helper's parameters of ``model``."""
    weight, helper = 0.0, {}
    if isinstance(model, Blend):
        if not isinstance(model.helper, ItemKNN):
            raise TypeError("only an ItemKNN helper can be served (the co-occurrence part)")
        weight = model.weight
        helper = {
            "neighbours": model.helper.neighbours,
            "shrink": model.helper.shrink,
            "half_life": model.helper.half_life,
        }
        model = model.base
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    if not all(isinstance(m, SASRec) and m.net is not None for m in members):
        raise TypeError("export needs fitted SASRec models (alone, in an Ensemble, or as a Blend's base)")
    if len({(m.max_len, m.n_items) for m in members}) != 1:  # type: ignore[union-attr]
        raise ValueError("ensemble members must share max_len and catalogue")
    return members, weight, helper  # type: ignore[return-value]


def export_onnx(
    model: Recommender, path: Path | str, items: Sequence[str], extra: dict[str, Any] | None = None
) -> ModelInfo:
    """Write ``model`` to ``path`` (atomically); ``items`` are the product ids of model indices 0..n-1."""
    torch = _torch()
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(TORCH_MISSING.replace("SASRec needs torch", "ONNX export needs onnx")) from exc
    members, weight, helper = _parts(model)
    if len(items) != members[0].n_items:
        raise ValueError(f"{len(items)} item ids for a model of {members[0].n_items} items")
    max_len = members[0].max_len
    info = ModelInfo(
        items=tuple(str(i) for i in items),
        max_len=max_len,
        members=len(members),
        weight=float(weight),
        helper=helper,
        extra=dict(extra or {}),
    )

    class Scorer(torch.nn.Module):
        def __init__(self, nets: list[Any]) -> None:
            super().__init__()
            self.nets = torch.nn.ModuleList(nets)

        def forward(self, seq: Any) -> Any:
            return torch.stack([net.logits(net(seq)[:, -1]) for net in self.nets], dim=1)

    nets = [m.net.cpu().eval() for m in members]
    scorer = Scorer(nets).eval()
    # One shopper a row, always padded to max_len: the legacy exporter fixes reshape sizes at the traced
    # shape, and left padding is masked, so a full-length row scores as the shorter one would.
    example = torch.zeros(1, max_len, dtype=torch.long)
    example[0, -1] = 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # Not under no_grad: there the encoder takes torch's fused fast path, which has no ONNX form.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                scorer,
                (example,),
                tmp,
                dynamo=False,
                input_names=["seq"],
                output_names=["scores"],
                opset_version=OPSET,
            )
        graph = onnx.load(tmp)
        entry = graph.metadata_props.add()
        entry.key, entry.value = META_KEY, info.to_json()
        onnx.save(graph, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a server under another user must read it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for m in members:  # back where training left them
        m.net.to(m.device)
    return info
