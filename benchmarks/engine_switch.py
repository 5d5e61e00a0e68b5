"""How much slower an engine's call runs right after another engine's: the cost of switching engines mid-benchmark.

Why: ``peers.py`` times its engines side by side in short turns (``BenchConfig.blocks``) so a slow spell of this
shared host falls on all of them alike. Run 31 (the first with turns of a tenth of a round) moved some peers'
paragraph throughput 16-20% down and ember's 6%: the engines that lost most were the ones that follow an ONNX Runtime
engine in the turn order. Thread pools keep spinning after a call returns (ONNX Runtime's, PyTorch's OpenMP), and a
call started while they spin shares the cores with them. This script measures it, and what the harness now does
about it (:func:`ember.bench.timing.wait_for_quiet` before every turn).

Each of ``--rounds`` rounds times the ``--target`` engine on every batch (``--batch`` texts, length-bucketed) and on
``--n1`` single texts, each call right after one untimed call of:

- ``self``: the target itself (the baseline: its own threads, caches warm for it);
- ``<engine>``: another engine (``ort``: ember's ``onnx-int8`` preset on ONNX Runtime; ``torch``: PyTorch eager fp32;
  ``openvino``: the OpenVINO peer as ``peers.py`` builds it), the target's call started at once;
- ``<engine>+quiet``: the same, the target's call started once ``wait_for_quiet`` returned (also printed: how long
  each engine's threads kept the process busy after its call).

    flock /work/notes/bench.lock python benchmarks/engine_switch.py --paragraphs       # peers.py's long workload
    python benchmarks/engine_switch.py --data my.csv --text-column body --target openvino

The last line is JSON: per case the median call time and its ratio to ``self``, per engine the median quiet wait.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ember.bench.rows import data_options  # noqa: E402
from ember.bench.timing import wait_for_quiet  # noqa: E402
from peers import ab_model_and_rows, ember_engine, openvino_peer, torch_peer, workload_options  # noqa: E402

CLINC = HERE.parent / ".." / "shared" / "data" / "clinc150"
ENGINES = ("ort", "torch", "openvino")


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    workload_options(ap, sample="sentences ember's onnx-int8 preset is built from")
    ap.add_argument("--target", default="openvino", choices=ENGINES, help="the engine timed after the others")
    ap.add_argument("--n", type=int, default=256, help="texts in the batches")
    ap.add_argument("--n1", type=int, default=40, help="single texts timed at batch 1")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if min(args.n, args.n1, args.batch, args.rounds, args.threads) < 1:
        ap.error("--n, --n1, --batch, --rounds and --threads must be >= 1")
    return args


def cases_for(target: str, engines: list[str]) -> list[str]:
    """The cases: ``self``, then each other engine's call right before, then each with a quiet wait between.

    Example:
        >>> cases_for("openvino", ["ort", "torch", "openvino"])
        ['self', 'ort', 'torch', 'ort+quiet', 'torch+quiet']
    """
    others = [n for n in engines if n != target]
    return ["self", *others, *(f"{n}+quiet" for n in others)]


def time_switches(target: str, engines: dict, inputs: dict[str, list[dict]], rounds: int, *,
                  quiet=wait_for_quiet, clock=time.perf_counter) -> dict[str, dict[str, list[float]]]:
    """Kind of input -> case -> seconds of each timed call of ``engines[target]``. For every input, every case in
    turn (the first one place on per input and round), each from an idle process: one untimed call of the case's
    engine on the same input (the target's own for ``self``), for ``+quiet`` cases then a ``quiet()`` wait, then the
    timed call."""
    cases = cases_for(target, list(engines))
    times: dict[str, dict[str, list[float]]] = {kind: {c: [] for c in cases} for kind in inputs}
    for r in range(rounds):
        for kind, xs in inputs.items():
            for j, x in enumerate(xs):
                k = (r + j) % len(cases)
                for case in cases[k:] + cases[:k]:
                    quiet()  # each case from an idle process: the last case's engines have stopped
                    prev = case.removesuffix("+quiet")
                    engines[target if prev == "self" else prev](**x)
                    if case.endswith("+quiet"):
                        quiet()
                    t = clock()
                    engines[target](**x)
                    times[kind][case].append(clock() - t)
    return times


def main() -> None:
    args = parse()
    import torch

    from ember.bench.config import BenchConfig
    from ember.bench.inputs import BenchInputs
    from ember.cli.quiet import quiet
    from ember.hardware import detect

    model, tok, texts, sample, rows = ab_model_and_rows(args, sample="build sample")
    with quiet():
        engines = {"ort": ember_engine(model, tok, "onnx-int8", sample, args.threads), "torch": torch_peer(model, False),
                   "openvino": openvino_peer(args.model, args.threads)}
    # the harness's tokenization: length-bucketed batches and single inputs, as peers.py times them
    inputs = BenchInputs(tok, texts, BenchConfig(batch_size=args.batch, latency_samples=args.n1,
                                                 throughput_examples=len(texts), max_length=512))
    batches, singles = inputs.bucketed, inputs.latency
    with torch.inference_mode():
        for b in batches[:2] + singles[:2]:  # first calls allocate
            for e in engines.values():
                e(**b)
        print(f"target {args.target}: {len(batches)} batches of up to {args.batch} and {len(singles)} single texts, "
              f"{args.rounds} rounds", flush=True)
        times = time_switches(args.target, engines, {"batch": batches, "batch 1": singles}, args.rounds)
        quiet_s: dict[str, list[float]] = {}
        for name, e in engines.items():  # how long each engine's threads stay busy after a call
            quiet_s[name] = []
            for x in batches[::max(1, len(batches) // 4)]:
                e(**x)
                quiet_s[name].append(wait_for_quiet())
    out: dict = {}
    for kind, per in times.items():
        base = statistics.median(per["self"])
        out[kind] = {c: {"median_ms": round(statistics.median(v) * 1000, 3),
                         "vs_self": round(statistics.median(v) / base, 3)} for c, v in per.items()}
        for c, v in out[kind].items():
            print(f"{kind:8s} after {c:16s} median {v['median_ms']:8.2f} ms  x{v['vs_self']:.3f} of after itself",
                  flush=True)
    waits = {n: round(statistics.median(v) * 1000, 1) for n, v in quiet_s.items() if v}
    print(f"threads busy after a call (median wait_for_quiet, ms, 10 ms windows): {waits}", flush=True)
    print(json.dumps({"benchmark": "engine_switch", "rows": rows, "target": args.target, "threads": args.threads,
                      "rounds": args.rounds, "cpu": detect().to_dict(), "results": out, "quiet_ms": waits}))


if __name__ == "__main__":
    main()
