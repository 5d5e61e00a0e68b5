"""Does the fast model still give the same answers? One module, used by optimize, autotune and bench.

Outputs are compared on padded batches of mixed lengths, because a variant that is only right on
unpadded single sentences (an export that dropped the attention mask, say) is the classic silent bug.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

Batch = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Tolerance:
    """Bounds a variant must stay within; ``None`` skips a check.

    Example:
        >>> Tolerance(min_mean_cosine=0.9999).violations(FidelityReport(n=4, mean_cosine=0.95, min_cosine=0.9))
        ['mean cosine 0.950000 < allowed 0.999900']
    """

    min_mean_cosine: float | None = 0.999
    min_cosine: float | None = None
    max_abs_logit_diff: float | None = None
    min_label_agreement: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_mean_cosine", "min_cosine", "min_label_agreement"):
            v = getattr(self, name)
            if v is not None and not -1.0 <= v <= 1.0:
                raise ValueError(f"{name}={v} must lie in [-1, 1]")
        if self.max_abs_logit_diff is not None and self.max_abs_logit_diff < 0:
            raise ValueError("max_abs_logit_diff must be >= 0")

    def violations(self, r: FidelityReport) -> list[str]:
        """Human-readable list of the bounds ``r`` breaks (empty when it passes)."""
        out = []
        if self.min_mean_cosine is not None and (r.mean_cosine is None or r.mean_cosine < self.min_mean_cosine):
            out.append(f"mean cosine {_fmt(r.mean_cosine)} < allowed {self.min_mean_cosine:.6f}")
        if self.min_cosine is not None and (r.min_cosine is None or r.min_cosine < self.min_cosine):
            out.append(f"min cosine {_fmt(r.min_cosine)} < allowed {self.min_cosine:.6f}")
        if self.max_abs_logit_diff is not None and r.max_abs_logit_diff is not None and (
            r.max_abs_logit_diff > self.max_abs_logit_diff
        ):
            out.append(f"max |Δlogits| {r.max_abs_logit_diff:.6f} > allowed {self.max_abs_logit_diff:.6f}")
        if self.min_label_agreement is not None and r.label_agreement is not None and (
            r.label_agreement < self.min_label_agreement
        ):
            out.append(f"label agreement {r.label_agreement:.4f} < allowed {self.min_label_agreement:.4f}")
        return out


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6f}"


@dataclass
class FidelityReport:
    """How closely a candidate matches a reference on the same inputs.

    ``mean_cosine``/``min_cosine`` are over examples, of mean-pooled hidden states (encoders) or of
    logit vectors (classifiers). ``max_abs_logit_diff`` and ``label_agreement`` exist for classifiers.
    """

    n: int
    mean_cosine: float | None = None
    min_cosine: float | None = None
    max_abs_logit_diff: float | None = None
    label_agreement: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> FidelityReport:
        return cls(**{k: d[k] for k in ("n", "mean_cosine", "min_cosine", "max_abs_logit_diff", "label_agreement") if k in d})


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the unmasked token vectors: ``(B, T, H), (B, T) -> (B, H)``."""
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def _field(out, name: str) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out if (name == "last_hidden_state") == (out.dim() == 3) else None
    if isinstance(out, Mapping):
        return out.get(name)
    return getattr(out, name, None)


def comparable(out, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(vectors (B, D), logits or None)`` from a model output (ModelOutput, dict or tensor)."""
    logits = _field(out, "logits")
    if logits is not None:
        logits = logits.detach().float().cpu()
        return logits, logits
    hidden = _field(out, "last_hidden_state")
    if hidden is None:
        raise TypeError(f"cannot compare an output of type {type(out).__name__}: it has neither logits nor last_hidden_state")
    return mean_pool(hidden.detach().float().cpu(), mask.cpu()), None


def compare(reference: Sequence, candidate: Sequence, masks: Sequence[torch.Tensor]) -> FidelityReport:
    """Compare per-batch outputs of two variants (same batches, same order)."""
    cos, diffs, agree, n = [], [], 0, 0
    for ref, cand, mask in zip(reference, candidate, masks, strict=True):
        rv, rl = comparable(ref, mask)
        cv, cl = comparable(cand, mask)
        if rv.shape != cv.shape:
            raise ValueError(f"reference gives shape {tuple(rv.shape)}, candidate {tuple(cv.shape)} on the same batch")
        cos.append(torch.nn.functional.cosine_similarity(rv, cv, dim=-1))
        if rl is not None and cl is not None:
            diffs.append((rl - cl).abs().max().item())
            agree += (rl.argmax(-1) == cl.argmax(-1)).sum().item()
        n += rv.shape[0]
    c = torch.cat(cos) if cos else torch.empty(0)
    c = torch.nan_to_num(c, nan=-1.0)  # a NaN output must fail, not pass
    return FidelityReport(
        n=n,
        mean_cosine=float(c.mean()) if n else None,
        min_cosine=float(c.min()) if n else None,
        max_abs_logit_diff=max(diffs) if diffs else None,
        label_agreement=agree / n if diffs and n else None,
    )


def run_batches(fn: Callable[..., object], batches: Iterable[Batch]) -> list:
    """Outputs of ``fn(**batch)`` for each batch under ``torch.inference_mode``."""
    with torch.inference_mode():
        return [fn(**b) for b in batches]


def check(reference: Callable[..., object], candidate: Callable[..., object], batches: Sequence[Batch]) -> FidelityReport:
    """Run both variants on the same batches and compare.

    Example:
        >>> rep = check(model, fast_model, mixed_length_batches(tok, texts))  # doctest: +SKIP
        >>> rep.mean_cosine > 0.9999  # doctest: +SKIP
    """
    masks = [b["attention_mask"] for b in batches]
    return compare(run_batches(reference, batches), run_batches(candidate, batches), masks)


def mixed_length_batches(tokenizer, texts: Sequence[str], batch_size: int = 8, max_length: int | None = None) -> list[dict]:
    """Padded batches in which short and long texts sit together, so padding is always exercised.

    Texts are sorted by length and dealt out round-robin, so every batch spans the length range. The tokenizer
    pads them, so it needs a pad token (:class:`~ember.errors.TokenizerError` otherwise).
    """
    from ember.models.checks import check_pad_token

    if not texts:
        raise ValueError("the verification sample is empty; pass some texts (or use ember's built-in sentences)")
    check_pad_token(tokenizer, "the fidelity check compares outputs on padded batches of texts of mixed lengths")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    n_batches = max(1, math.ceil(len(texts) / batch_size))
    groups = [order[i::n_batches] for i in range(n_batches)]
    kw = {"truncation": True, "max_length": max_length} if max_length else {"truncation": True}
    return [dict(tokenizer([texts[i] for i in g], padding=True, return_tensors="pt", **kw)) for g in groups]
