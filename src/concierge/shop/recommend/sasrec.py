"""SASRec-style sequential recommender: a small causal transformer over the item history.

Item embeddings (tied with the output layer) plus learned positions counted back from the most recent
item, pre-norm transformer blocks with a causal mask, trained to predict the next item at every position
with softmax cross-entropy: over 1,024 items drawn by popularity with the logQ correction
(``negatives``, ``sampling``), or over the whole catalogue (``negatives=0``, or any catalogue of at
most that many items).

The defaults below were chosen on MovieLens latest-small's **validation** targets, except where said
(``scripts/sweep_sasrec.py``, which never scores the test targets; 671 users, so validation is noisy;
2 seeds each, docs/benchmarks.md, 2026-12-04):

* the softmax: popularity-drawn negatives 0.0771 mean valid NDCG@10 at about 190 s a model, the full
  softmax 0.0757 at 345-512 s, uniformly drawn negatives 0.066-0.067;
* ``hidden`` 64: one model at 128 scored 0.0779 against 0.0771 (within noise), but the served blend
  (two members and ItemKNN, weight picked on validation) scored 0.0841 valid NDCG@10 at 128 against
  0.0873 at 64, and the blend is what shoppers get; one head with an item bias 0.0749;
* ``crop="all"``: each epoch cuts every user's whole history into consecutive windows at a random
  offset, so every interaction is a target once per epoch: 0.0771 against 0.0709 for one random
  window per user (an earlier GPU sweep had made this choice on test figures; now re-made);
* ``max_len`` 200 beat 50 and 100 on validation (valid NDCG@10 ~0.08 vs ~0.065);
* ``mask_seen``: each position's softmax leaves out the items already seen in its window, as the
  evaluation leaves out the history (label smoothing and EMA decay 0.995 were last compared on test
  figures, in the GPU sweep, and are left at their defaults, not chosen by it);
* AdamW with a short warm-up, learning rate halved when validation stalls for ``lr_patience`` epochs,
  early stopping after ``patience`` epochs without a better validation NDCG@10, best weights restored;
  the weights evaluated are an exponential moving average of the trained ones (``ema``).

The same code trains on CUDA with ``device="cuda"``.

torch is imported lazily: it lives in the ``train`` extra, not the default install.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from concierge.shop.recommend.base import Split
from concierge.shop.recommend.metrics import evaluate

TORCH_MISSING = "SASRec needs torch, which is in the training extra: pip install 'concierge[train]'"


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(TORCH_MISSING) from exc
    return torch


def torch_available() -> bool:
    try:
        _torch()
    except RuntimeError:
        return False
    return True


def _dropout(x: Any, p: float, training: bool) -> Any:
    """Dropout with the mask drawn as random bytes: 5x quicker on a CPU than torch's ``bernoulli_``,
    which was a fifth of a training step. The rate is ``p`` rounded to 1/256."""
    if not training or p <= 0:
        return x
    torch = _torch()
    cut = round(p * 256)
    keep = torch.empty(x.shape, dtype=torch.uint8, device=x.device).random_() >= cut
    return x * keep * (256 / (256 - cut))


def _build_network(
    n_items: int, hidden: int, blocks: int, heads: int, max_len: int, dropout: float, item_bias: bool = False
) -> Any:
    torch = _torch()
    nn = torch.nn
    head_dim = hidden // heads

    class Block(nn.Module):
        """A pre-norm transformer block, as ``nn.TransformerEncoderLayer(norm_first=True, gelu,
        dim_feedforward=2 x hidden)`` computes it, with dropout on the attention weights, after the
        attention, inside and after the feed-forward part (drawn by :func:`_dropout`)."""

        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(hidden)
            self.qkv = nn.Linear(hidden, 3 * hidden)
            self.out = nn.Linear(hidden, hidden)
            self.norm2 = nn.LayerNorm(hidden)
            self.ff1 = nn.Linear(hidden, 2 * hidden)
            self.ff2 = nn.Linear(2 * hidden, hidden)
            nn.init.xavier_uniform_(self.qkv.weight)  # nn.MultiheadAttention's initialisation
            nn.init.zeros_(self.qkv.bias)
            nn.init.zeros_(self.out.bias)

        def forward(self, x: Any, mask: Any) -> Any:
            """x (B, L, hidden); mask (B, 1, L, L), added to the attention scores (0 or -inf)."""
            batch, length, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            weights = ((q @ k.transpose(-1, -2)) * head_dim**-0.5 + mask).softmax(-1)
            y = (_dropout(weights, dropout, self.training) @ v).transpose(1, 2).reshape(batch, length, hidden)
            x = x + _dropout(self.out(y), dropout, self.training)
            inner = _dropout(nn.functional.gelu(self.ff1(self.norm2(x))), dropout, self.training)
            return x + _dropout(self.ff2(inner), dropout, self.training)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(n_items + 1, hidden, padding_idx=0)  # index 0 = padding
            self.positions = nn.Embedding(max_len, hidden)
            self.blocks = nn.ModuleList(Block() for _ in range(blocks))
            self.norm = nn.LayerNorm(hidden)
            # A per-item output bias lets the softmax carry popularity apart from taste.
            self.bias = nn.Parameter(torch.zeros(n_items + 1)) if item_bias else None
            nn.init.normal_(self.items.weight, std=hidden**-0.5)
            nn.init.normal_(self.positions.weight, std=0.02)
            with torch.no_grad():
                self.items.weight[0].zero_()

        def forward(self, seq: Any) -> Any:
            """(B, L) left-padded item ids -> (B, L, hidden) states; position L-1 is the latest item."""
            batch, length = seq.shape
            real = seq > 0
            pos = torch.arange(max_len - length, max_len, device=seq.device)
            x = self.items(seq) * math.sqrt(hidden) + self.positions(pos)[None]
            x = _dropout(x, dropout, self.training) * real[..., None]
            # Causal mask, padded keys hidden too; every query may see itself so no row is all -inf.
            # Built from index comparisons rather than tril/eye so the graph exports to ONNX (onnxruntime
            # has no boolean EyeLike): the masks are the same.
            idx = torch.arange(length, device=seq.device)
            causal = idx[None, :] <= idx[:, None]
            eye = idx[None, :] == idx[:, None]
            allowed = causal[None] & (real[:, None, :] | eye[None])
            mask = torch.zeros(batch, 1, length, length, device=seq.device).masked_fill(
                ~allowed[:, None], float("-inf")
            )
            for block in self.blocks:
                x = block(x, mask)
            return self.norm(x)

        def logits(self, states: Any) -> Any:
            """Scores of the real items (column j = item id j + 1; the padding row is left out)."""
            out = states @ self.items.weight[1:].T
            if self.bias is not None:
                out = out + self.bias[1:]
            return out

    return Net()


class SASRec:
    """Self-attentive sequential recommender trained with full-softmax next-item cross-entropy."""

    name = "sasrec"

    def __init__(
        self,
        hidden: int = 64,
        blocks: int = 2,
        heads: int = 2,
        max_len: int = 200,
        dropout: float = 0.3,
        lr: float = 3e-3,
        weight_decay: float = 0.1,
        batch_size: int = 32,
        epochs: int = 200,
        patience: int = 10,
        warmup_steps: int = 20,
        crop: str = "all",
        lr_patience: int = 3,
        mask_seen: bool = True,
        ema: float = 0.98,
        seed: int = 0,
        threads: int = 2,
        device: str = "cpu",
        item_bias: bool = False,
        label_smoothing: float = 0.0,
        negatives: int = 1024,
        sampling: str = "popularity",
    ) -> None:
        self.hidden = hidden
        self.blocks = blocks
        self.heads = heads
        self.max_len = max_len
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.warmup_steps = warmup_steps
        if crop not in ("last", "random", "all"):
            raise ValueError(f"crop must be 'last', 'random' or 'all', not {crop!r}")
        self.crop = crop
        self.lr_patience = lr_patience
        self.mask_seen = mask_seen
        self.ema = ema
        self.seed = seed
        self.threads = threads
        self.device = device
        self.item_bias = item_bias
        if label_smoothing and mask_seen:
            raise ValueError("label_smoothing needs mask_seen=False (smoothing onto masked items is infinite)")
        self.label_smoothing = label_smoothing
        # 0: full softmax over the catalogue. N: each batch's softmax over its targets and N items drawn
        # (``sampling``, shared by the batch's positions): the catalogue-wide logits were most of a step.
        if negatives < 0:
            raise ValueError("negatives must be 0 (full softmax) or a positive count")
        self.negatives = int(negatives)
        # uniform: every item alike; popularity: items drawn by training count (+1), each logit then
        # corrected by the log of its chance to be drawn (sampled softmax's logQ correction).
        if sampling not in ("uniform", "popularity"):
            raise ValueError(f"sampling must be 'uniform' or 'popularity', not {sampling!r}")
        self.sampling = sampling
        self._draw_p: np.ndarray | None = None
        self._log_inclusion: Any = None
        self.net: Any = None
        self.n_items = 0
        self.best_epoch = 0
        self.epochs_run = 0
        self.best_valid_ndcg = 0.0

    def _pad(self, seqs: Sequence[np.ndarray], length: int) -> Any:
        """Left-pad (and truncate to the most recent ``length``) shifted item ids into a tensor."""
        torch = _torch()
        out = np.zeros((len(seqs), length), dtype=np.int64)
        for row, seq in enumerate(seqs):
            tail = np.asarray(seq[-length:], dtype=np.int64) + 1
            if len(tail):
                out[row, length - len(tail) :] = tail
        return torch.from_numpy(out).to(self.device)

    def fit(self, split: Split, progress: Any | None = None) -> None:
        torch = _torch()
        torch.manual_seed(self.seed)
        torch.set_num_threads(self.threads)
        rng = np.random.default_rng(self.seed)
        self.n_items = split.n_items
        self.net = _build_network(
            split.n_items, self.hidden, self.blocks, self.heads, self.max_len, self.dropout, self.item_bias
        ).to(self.device)
        # ``self.net`` (what ``score`` uses) is an exponential moving average of the trained weights:
        # smoother than the last step on a dataset this small, and steadier to early-stop on.
        train_net = self.net
        self.net = copy.deepcopy(train_net) if self.ema else train_net
        optim = torch.optim.AdamW(
            train_net.parameters(), lr=self.lr, weight_decay=self.weight_decay, betas=(0.9, 0.98)
        )
        # Linear warm-up keeps the higher learning rate (few users -> few steps per epoch) stable; the
        # rate is halved whenever validation stalls for ``lr_patience`` epochs (settles a noisy plateau).
        scale = [1.0]
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optim, lambda step: min(1.0, (step + 1) / self.warmup_steps) * scale[0]
        )
        # Training examples: each user's training sequence (input = all but last, target = shifted by one).
        seqs = [s for s in split.train if len(s) >= 2]
        self._prepare_sampling(seqs)
        has_valid = len(split.eval_users("valid")) > 0
        task = progress.add_task("sasrec", total=self.epochs) if progress is not None else None
        best_state: dict[str, Any] | None = None
        best, best_epoch, stale = -1.0, 0, 0
        for epoch in range(1, self.epochs + 1):
            start = time.perf_counter()
            loss = self._epoch(train_net, seqs, optim, schedule, rng)
            ndcg = evaluate(self, split, "valid", coverage=False)["NDCG@10"] if has_valid else -loss
            self.epochs_run = epoch
            if ndcg > best:
                best, best_epoch, stale = ndcg, epoch, 0
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                stale += 1
                if self.lr_patience and stale % self.lr_patience == 0:
                    scale[0] *= 0.5
            if progress is not None:
                progress.update(
                    task,
                    advance=1,
                    description=f"sasrec loss {loss:.3f} valid NDCG@10 {ndcg:.4f} (best {best:.4f} @ {best_epoch}, "
                    f"{time.perf_counter() - start:.1f}s/epoch)",
                )
            if stale >= self.patience:
                break
        if progress is not None:
            progress.update(task, completed=self.epochs)
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.best_epoch, self.best_valid_ndcg = best_epoch, max(best, 0.0)

    def _epoch(
        self, net: Any, seqs: list[np.ndarray], optim: Any, schedule: Any, rng: np.random.Generator
    ) -> float:
        torch = _torch()
        net.train()
        windows = [w for seq in seqs for w in self._windows(seq, rng)]
        order = rng.permutation(len(windows))
        total, count = 0.0, 0
        for start in range(0, len(order), self.batch_size):
            batch = [windows[i] for i in order[start : start + self.batch_size]]
            length = max(len(s) for s in batch) - 1
            inputs = self._pad([s[:-1] for s in batch], length)
            targets = self._pad([s[1:] for s in batch], length)
            states = net(inputs)
            real = targets > 0
            if self.negatives and self.negatives < self.n_items:
                loss = self._sampled_loss(net, states, inputs, targets, real, rng)
            else:
                # Logits only at real positions: (positions x catalogue) is the memory-heavy tensor.
                logits = net.logits(states[real])
                if self.mask_seen:
                    self._mask_seen(logits, inputs, targets, real)
                loss = torch.nn.functional.cross_entropy(
                    logits, targets[real] - 1, label_smoothing=self.label_smoothing
                )
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            schedule.step()
            if self.net is not net:
                with torch.no_grad():
                    for avg, cur in zip(self.net.parameters(), net.parameters(), strict=True):
                        avg.lerp_(cur, 1.0 - self.ema)
            n = int(real.sum())
            total += float(loss.detach()) * n
            count += n
        return total / max(count, 1)

    def _prepare_sampling(self, seqs: Sequence[np.ndarray]) -> None:
        """Popularity sampling: each item's chance to be drawn, and the log of its chance to be among
        a batch's ``negatives`` draws (at least once), which its logit is corrected by."""
        self._draw_p = self._log_inclusion = None
        if not (self.negatives and self.sampling == "popularity"):
            return
        torch = _torch()
        counts = np.bincount(np.concatenate(seqs), minlength=self.n_items).astype(np.float64) + 1.0
        self._draw_p = counts / counts.sum()
        inclusion = -np.expm1(self.negatives * np.log1p(-self._draw_p))
        self._log_inclusion = torch.from_numpy(np.log(inclusion)).float().to(self.device)

    def _sampled_loss(
        self, net: Any, states: Any, inputs: Any, targets: Any, real: Any, rng: np.random.Generator
    ) -> Any:
        """Cross-entropy of each target against ``negatives`` drawn items (not against the whole
        catalogue): uniformly, or by popularity with every logit less the log of its item's chance to
        be drawn (:meth:`_prepare_sampling`). A drawn item that is the position's own target, or (``mask_seen``) that the
        position has already seen, is left out of its softmax, as the full softmax leaves them out."""
        torch = _torch()
        if self._draw_p is not None:
            picks = np.unique(rng.choice(self.n_items, self.negatives, p=self._draw_p))
        else:
            picks = rng.choice(self.n_items, self.negatives, replace=False)
        drawn = torch.from_numpy(picks + 1).to(states.device)
        hidden = drawn[None, :] == targets[real][:, None]
        if self.mask_seen:
            # Position t of row b has seen item i when i's first place in inputs[b] is at or before t.
            batch, length = inputs.shape
            first = torch.full((batch, self.n_items + 1), length, dtype=torch.long, device=inputs.device)
            places = torch.arange(length, device=inputs.device).expand(batch, length)
            first.scatter_reduce_(1, inputs, places, reduce="amin")
            rows, steps = real.nonzero(as_tuple=True)
            hidden |= first[:, drawn][rows] <= steps[:, None]
        weight = net.items.weight
        states, target_ids = states[real], targets[real]
        positive = (states * weight[target_ids]).sum(-1, keepdim=True)
        negative = states @ weight[drawn].T
        if net.bias is not None:
            positive = positive + net.bias[target_ids][:, None]
            negative = negative + net.bias[drawn]
        if self._log_inclusion is not None:
            positive = positive - self._log_inclusion[target_ids - 1][:, None]
            negative = negative - self._log_inclusion[drawn - 1]
        negative = negative.masked_fill(hidden, float("-inf"))
        logits = torch.cat([positive, negative], dim=1)
        zeros = torch.zeros(len(target_ids), dtype=torch.long, device=states.device)
        return torch.nn.functional.cross_entropy(logits, zeros, label_smoothing=self.label_smoothing)

    @staticmethod
    def _mask_seen(logits: Any, inputs: Any, targets: Any, real: Any) -> None:
        """Hide each position's already-seen items from its softmax, in place.

        Evaluation never ranks a user's history, so training need not spend capacity pushing seen items
        down: the loss then contrasts the next item with unseen items only, as the ranking does.
        """
        torch = _torch()
        length = inputs.shape[1]
        row_of = torch.full(real.shape, -1, dtype=torch.long, device=real.device)
        row_of[real] = torch.arange(int(real.sum()), device=real.device)
        seen = (
            real[:, :, None]
            & torch.ones(length, length, dtype=torch.bool, device=real.device).tril()[None]
            & (inputs > 0)[:, None, :]
            & (inputs[:, None, :] != targets[:, :, None])  # a repeated item stays a valid target
        )
        b, t, j = seen.nonzero(as_tuple=True)
        # Item ids are shifted by one (0 = padding); logits columns are not.
        logits.index_put_((row_of[b, t], inputs[b, j] - 1), torch.tensor(float("-inf"), device=logits.device))

    def _windows(self, seq: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """This epoch's training windows (max_len + 1 items each) of one user's sequence.

        ``last``: the latest window only. ``random``: one window at a random place, so long histories are
        seen in full over the epochs. ``all``: the whole sequence cut into consecutive windows at a random
        offset (each target once per epoch, heavy users weigh more, as with RecBole's prefix examples).
        """
        span = self.max_len + 1
        if len(seq) <= span or self.crop == "last":
            return [seq[-span:]]
        if self.crop == "random":
            end = int(rng.integers(span, len(seq) + 1))
            return [seq[end - span : end]]
        # Windows overlap by one item (the last target of one is the first input of the next) and start
        # at a random phase, so every target is trained once per epoch with varying context.
        stop = len(seq) - int(rng.integers(0, span - 1))
        out = [seq[stop - 1 :]] if stop < len(seq) else []
        while stop >= 2:
            start = max(0, stop - span)
            out.append(seq[start:stop])
            stop = start + 1 if start > 0 else 0
        return out

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Scores from the last hidden state against every item embedding (padding column dropped)."""
        if self.net is None:
            raise RuntimeError("fit the model first")
        torch = _torch()
        self.net.eval()
        out = np.zeros((len(histories), self.n_items), dtype=np.float32)
        nonempty = [i for i, h in enumerate(histories) if len(h)]
        if not nonempty:
            return out
        with torch.no_grad():
            for start in range(0, len(nonempty), 128):
                rows = nonempty[start : start + 128]
                seqs = [histories[i] for i in rows]
                length = min(self.max_len, max(len(s) for s in seqs))
                states = self.net(self._pad(seqs, length))[:, -1]
                out[rows] = self.net.logits(states).float().cpu().numpy()
        return out

    def params(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "blocks": self.blocks,
            "heads": self.heads,
            "max_len": self.max_len,
            "dropout": self.dropout,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "crop": self.crop,
            "mask_seen": self.mask_seen,
            "ema": self.ema,
            "device": self.device,
            "item_bias": self.item_bias,
            "label_smoothing": self.label_smoothing,
            "negatives": self.negatives,
            "sampling": self.sampling,
            "max_epochs": self.epochs,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "best_valid_NDCG@10": round(self.best_valid_ndcg, 4),
        }
