"""Batch-1 latency with the weights in the CPU's cache and without: ember's presets beside the faithful peer.

Why: in ``peers.py``'s runs on a Zen 4 (2 vCPUs of a shared host, a 32 MB L3) ``ember-openvino-bf16``'s batch-1 p50 on
intents moved between 1.3 and 3.1 ms from round to round on the same code (runs 21–26), Optimum's ONNX Runtime fp32
model (the best faithful peer at batch 1 there) between 2.1 and 3.5 ms. One thing that moves it: a bf16 copy of
MiniLM-L6's encoder weights (~21 MB) fits in that L3 and an fp32 one (~42 MB) does not, so only ember's faithful model
gains from a cache the host leaves to it, and loses when other work has used it. This times both on purpose:

- ``warm``: the inputs back to back, as ``peers.py`` calls them (what the cache holds is what the host leaves);
- ``cold``: before each (untimed) call a sweep reads ``--evict-mb`` of memory (default: twice the L3 this CPU
  reports), so every call starts with the weights out of the cache, as a request after other work does.

Engines: each of ``--presets`` built through ``optimize()`` from a sample of the workload's training texts (never the
timed ones), and ``--peers``, the faithful peers ``peers.py`` found fastest at batch 1: ``optimum-ort-O2`` (intents;
exported in ``peers.py``'s side venv, ``--optimum-python``, run by ONNX Runtime here; where that venv is missing,
ember's own ``onnx`` preset, ONNX Runtime fp32 on the same kernels, is timed in its place and the output says so) and
``openvino`` (paragraphs; OpenVINO's own conversion and compile, as ``peers.py`` runs it). In each of ``--rounds``
rounds every engine runs the ``--n`` timed inputs one at a time, warm then cold, the engines' order rotated each round;
p50s pool the calls of all rounds, and each round's p50 is kept (the spread a ratio has). Ratios are against the
fastest peer in each mode (for the int8 presets too: the faithful peers are the ones timed here).

``--turn K`` adds a third mode, ``turn``: K calls back to back, as in one of ``peers.py``'s turns, each call's time kept
by its place in the turn; the output gives the p50 at each place, the first place from which every later one is within
5% of the warm p50, and the turn's p50 with its first 0/2/5/10 calls left untimed (how many untimed calls a turn
needs before its timed ones measure the engine warm). Before each turn, ``--between sweep`` (default) reads past the
cache once; ``--between engines`` lets the other engines take their turns (each once the last one's threads are idle,
as ``peers.py`` runs them) — add presets to ``--presets`` to put more engines between.

    flock /work/notes/bench.lock python benchmarks/batch1_cache.py                 # CLINC150 test (intents)
    flock /work/notes/bench.lock python benchmarks/batch1_cache.py --paragraphs --n 200
    flock /work/notes/bench.lock python benchmarks/batch1_cache.py --turn 30 --peers optimum-ort-O2
    flock /work/notes/bench.lock python benchmarks/batch1_cache.py --turn 30 --between engines --presets openvino-bf16,onnx
    python benchmarks/batch1_cache.py --data my.csv --text-column body --presets openvino-bf16,openvino-int8

The last line is JSON: per engine and mode the p50 (pooled) and each round's, and each ember preset's speed-up over the
fastest peer in each mode.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ember.bench.rows import data_options  # noqa: E402
from ember.bench.timing import Laps, interleave, quantile, wait_for_quiet  # noqa: E402
from peers import (  # noqa: E402  (the workloads and engines: one definition each)
    LONG_DATA,
    ab_model_and_rows,
    ember_engine,
    openvino_peer,
    side_peer,
    workload_options,
)

CLINC = HERE.parent / ".." / "shared" / "data" / "clinc150"
MODES = ("warm", "cold")
PEERS = ("optimum-ort-O2", "openvino")


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap, data=CLINC, split="test")
    workload_options(ap, sample="sentences ember's presets are built from")
    ap.add_argument("--presets", default="openvino-bf16,openvino-int8")
    ap.add_argument("--peers", default="optimum-ort-O2,openvino", help="comma-separated: optimum-ort-O2, openvino")
    ap.add_argument("--optimum-python", default="/tmp/optimum-venv/bin/python",
                    help="python of a venv with optimum-onnx (transformers<4.58), as for peers.py")
    ap.add_argument("--n", type=int, default=300, help="inputs timed one at a time per engine, mode and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--evict-mb", type=int, default=0, help="memory read before each cold call (default: 2 x the L3)")
    ap.add_argument("--turn", type=int, default=0,
                    help="also time turns of this many calls, per place in the turn (0: off)")
    ap.add_argument("--between", choices=("sweep", "engines"), default="sweep",
                    help="before each turn: a cache read (sweep) or the other engines' turns (engines, as peers.py)")
    args = ap.parse_args()
    unknown = [p for p in args.peers.split(",") if p and p not in PEERS]
    if unknown:
        ap.error(f"--peers: unknown {', '.join(unknown)}; choose from {', '.join(PEERS)} (or none: --peers '')")
    if min(args.n, args.rounds) < 1 or args.evict_mb < 0:
        ap.error(f"--n {args.n} and --rounds {args.rounds} must be >= 1 and --evict-mb {args.evict_mb} >= 0 (0: twice the L3)")
    if not 0 <= args.turn <= args.n:
        ap.error(f"--turn {args.turn} must be between 0 (off) and --n {args.n}: a turn's calls are timed inputs")
    return args


def l3_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The largest cache this CPU reports (Linux's sysfs ``index*/size`` under ``root``), in bytes, or ``None`` where
    it reports none (another OS, a container without sysfs)."""
    sizes = []
    for f in root.glob("index*/size"):
        text = f.read_text().strip()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes) if sizes else None


def time_rounds(engines: dict, inputs: list[dict], rounds: int, sweep: np.ndarray, turn: int = 0,
                between: str = "sweep", quiet: Callable[[], object] = wait_for_quiet) -> dict[str, dict[str, list[list[float]]]]:
    """Each round: every engine (order rotated, :func:`ember.bench.timing.interleave`) runs ``inputs`` warm then cold;
    engine -> mode -> per-round seconds. With ``turn``, also ``inputs`` in turns of that many calls, each call's
    seconds kept by its place in the turn (pooled over turns and rounds): ``between="sweep"``: each engine's turns
    back to back, the cache read past before each (in its round's block); ``"engines"``: after the rounds, ``rounds``
    more in which the engines take turns one by one (the first one place on each turn), each turn once ``quiet()``
    returns, as ``peers.py`` runs them — what the other engines leave behind, not a sweep, before each."""
    out: dict[str, dict[str, list[list[float]]]] = {n: {m: [] for m in MODES} for n in engines}
    for name in engines if turn else ():
        out[name]["turn"] = [[] for _ in range(turn)]
    starts = list(range(0, len(inputs) - turn + 1, turn)) if turn else []

    def one_turn(name: str, start: int) -> None:
        for place, b in enumerate(inputs[start:start + turn]):
            t0 = time.perf_counter()
            engines[name](**b)
            out[name]["turn"][place].append(time.perf_counter() - t0)

    def block(name: str) -> None:
        for mode in MODES:
            laps = Laps(warmup=10)
            for b in inputs[:10] + inputs:
                if mode == "cold":
                    sweep.sum()  # untimed: reads past the cache, so the call starts without its weights there
                with laps.lap(mode):
                    engines[name](**b)
            out[name][mode].append(laps.seconds(mode))
        for start in starts if between == "sweep" else ():
            sweep.sum()  # once per turn: the cache emptied, as the other engines' turns would
            one_turn(name, start)

    def after_quiet(name: str, start: int) -> None:
        quiet()  # the last engine's threads idle first, as in peers.py's turns
        one_turn(name, start)

    interleave({name: lambda _round, name=name: block(name) for name in engines}, range(rounds))
    if between == "engines":
        interleave({name: lambda start, name=name: after_quiet(name, start) for name in engines}, starts * rounds)
    return out


def settled(places: list[float], warm: float, within: float = 0.05) -> int | None:
    """The first place (1-based) from which every place's p50 is within ``within`` of ``warm``; ``None`` if the last
    one is not."""
    first = None
    for k, p in enumerate(places, 1):
        first = (first or k) if p <= warm * (1 + within) else None
    return first


def main() -> None:
    args = parse()
    from ember.cli.quiet import quiet
    from ember.hardware import detect

    model, tok, texts, sample, rows = ab_model_and_rows(args, sample="build sample")
    l3 = l3_bytes()
    evict = args.evict_mb * (1 << 20) if args.evict_mb else 2 * (l3 or 32 << 20)
    sweep = np.ones(evict // 8)
    print(f"cold calls: {evict >> 20} MB read before each (largest cache this CPU reports: {(l3 or 0) >> 20} MB)",
          flush=True)
    engines: dict = {}
    for name in args.presets.split(","):
        with quiet():  # the engines' own output (NNCF's progress bars) behind the script's
            engines[f"ember-{name}"] = ember_engine(model, tok, name, sample, args.threads)
    peers, peer_note = [], ""
    for peer in [p for p in args.peers.split(",") if p]:
        if peer == "openvino":
            with quiet():
                engines[peer] = openvino_peer(args.model, args.threads)
            peers.append(peer)
        else:  # optimum-ort-O2 (parse checked the names)
            ns = argparse.Namespace(model_path=args.model, threads=args.threads, optimum_python=args.optimum_python,
                                    st_openvino_python=None, long_data=str(LONG_DATA))
            try:
                engines[peer] = side_peer("o2", ns, Path(tempfile.mkdtemp(prefix="ember-b1-")))
                peers.append(peer)
            except RuntimeError as exc:
                peer_note = f"{peer} not run ({exc}); ember's onnx preset (ONNX Runtime fp32) timed in its place"
                print(peer_note, flush=True)
                stand_in = f"ember-onnx (in place of {peer})"
                with quiet():
                    engines[stand_in] = ember_engine(model, tok, "onnx", sample, args.threads)
                peers.append(stand_in)
    names = list(engines)
    inputs = [dict(tok(t, truncation=True, max_length=512, return_tensors="pt")) for t in texts[:args.n]]
    print(f"timing {len(inputs)} inputs one at a time, {args.rounds} rounds: {', '.join(names)}", flush=True)
    laps = time_rounds(engines, inputs, args.rounds, sweep, args.turn, args.between)
    res: dict = {}
    for name in names:
        res[name] = {}
        for mode in MODES:
            pooled = [s for rnd in laps[name][mode] for s in rnd]
            res[name][mode] = {"p50_ms": quantile(pooled, 0.5) * 1000,
                               "rounds_p50_ms": [round(quantile(rnd, 0.5) * 1000, 3) for rnd in laps[name][mode]]}
        w, c = res[name]["warm"], res[name]["cold"]
        print(f"{name:34s} warm p50 {w['p50_ms']:6.3f} ms {w['rounds_p50_ms']}   cold p50 {c['p50_ms']:6.3f} ms "
              f"{c['rounds_p50_ms']}  (cold/warm x{c['p50_ms'] / w['p50_ms']:.2f})", flush=True)
    for name in names if args.turn else ():
        places = [quantile(at, 0.5) * 1000 for at in laps[name]["turn"]]
        warm_at = settled(places, res[name]["warm"]["p50_ms"])
        skipped = {r: quantile([s for at in laps[name]["turn"][r:] for s in at], 0.5) * 1000
                   for r in (0, 2, 5, 10) if r < args.turn}  # the turn's p50 with its first r calls untimed
        res[name]["turn"] = {"place_p50_ms": [round(p, 3) for p in places], "warm_from_place": warm_at,
                             "p50_ms_untimed_first": skipped}
        print(f"{name:34s} turn of {args.turn} after {'a cache read' if args.between == 'sweep' else 'the others'}, "
              "p50 by place: "
              f"{' '.join(f'{p:.2f}' for p in places[:8])} ... {places[-1]:.2f} ms; "
              f"within 5% of warm from place {warm_at}; the turn's p50 with its first r calls untimed: "
              + ", ".join(f"r={r} {v:.3f}" for r, v in skipped.items()), flush=True)
    ratios = {}
    if peers:
        best = {m: min(peers, key=lambda p: res[p][m]["p50_ms"]) for m in MODES}
        for name in names:
            if name not in peers:
                ratios[name] = {m: {"peer": best[m], "speedup": res[best[m]][m]["p50_ms"] / res[name][m]["p50_ms"]}
                                for m in MODES}
                print(f"{name} vs the fastest peer: x{ratios[name]['warm']['speedup']:.2f} warm ({best['warm']}), "
                      f"x{ratios[name]['cold']['speedup']:.2f} cold ({best['cold']})", flush=True)
    out = {"benchmark": "batch1_cache", "rows": rows, "n": len(inputs), "rounds": args.rounds, "threads": args.threads,
           "turn": args.turn, "between": args.between,
           "evict_mb": evict >> 20, "cpu": detect().to_dict(), "peers": peers, "peer_note": peer_note,
           "results": res, "speedup_vs_peer": ratios}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
