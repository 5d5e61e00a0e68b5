"""The tensors a benchmark run feeds its variants, tokenized once up front so tokenization is never timed."""

from __future__ import annotations

from collections.abc import Sequence

from ember.batching import length_buckets
from ember.bench.config import BenchConfig
from ember.bench.timing import parts
from ember.fidelity import mixed_length_batches


class BenchInputs:
    """Batch-1 inputs, throughput batches (dataset order and length-bucketed), evaluation and fidelity batches.

    Args:
        tokenizer: a Hugging Face tokenizer with a pad token.
        texts: the run's texts, in dataset order.
        config: sizes: latency samples, throughput examples, batch sizes, max length.

    Example:
        >>> inputs = BenchInputs(tok, texts, BenchConfig(batch_size=8))  # doctest: +SKIP
        >>> inputs.bucketed[0]["input_ids"].shape  # doctest: +SKIP
        torch.Size([8, 9])
    """

    def __init__(self, tokenizer, texts: Sequence[str], config: BenchConfig) -> None:
        kw = {"truncation": True, "max_length": config.max_length, "return_tensors": "pt"}
        self.latency = [dict(tokenizer(t, **kw)) for t in texts[: config.latency_samples]]  # each (1, T_i)
        lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=config.max_length)["input_ids"]]
        self.lengths = lengths

        def batches(idx_groups: list[list[int]]) -> list[dict]:
            return [dict(tokenizer([texts[i] for i in g], padding=True, **kw)) for g in idx_groups]  # (B, T_max)

        n_tp = min(len(texts), config.throughput_examples)
        self.n_throughput = n_tp
        self.unbucketed = batches(length_buckets(lengths[:n_tp], config.batch_size, sort=False))
        self.bucketed = batches(length_buckets(lengths[:n_tp], config.batch_size, sort=True))
        self.eval_groups = length_buckets(lengths, config.batch_size, sort=True)
        self.eval = batches(self.eval_groups)
        fid_texts = list(texts[: config.fidelity_examples])
        self.fidelity = mixed_length_batches(tokenizer, fid_texts, config.fidelity_batch_size, config.max_length)
        self.fidelity_masks = [b["attention_mask"] for b in self.fidelity]

    def checks(self, labelled: bool) -> int:
        """Untimed model calls per variant: fidelity batches, and evaluation batches when labelled."""
        return len(self.fidelity) + (len(self.eval) if labelled else 0)

    def timed(self, config: BenchConfig) -> int:
        """Timed model calls (with their warm-up) per variant, for the progress bar."""
        rounds = config.repeats if config.interleave else 1
        warm = config.warmup + min(2, len(self.bucketed))
        rewarm = config.rewarm_calls * len(parts(len(self.latency), config.blocks)) if self.latency else 0
        passes = config.repeats * (len(self.bucketed) + len(self.unbucketed))
        return warm + rounds * (len(self.latency) + rewarm) + passes

    def steps(self, config: BenchConfig, labelled: bool) -> int:
        """Model calls per variant (for the progress bar)."""
        return self.checks(labelled) + self.timed(config)
