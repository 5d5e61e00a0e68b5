"""Fault campaign: what happens to an ember store under kill -9, concurrent use, damage and a full disk.

Not a timing benchmark: it injects faults and counts what was lost, what was wrong and what crashed.
Parts (``--parts``, default all):
  kill        SIGKILL a ``Recycler.fill`` child at a random moment (``--trials`` times, alternating the
              ``--batch-sizes``: once a random fraction of the texts is committed, within the next batch's
              computation or commit); reopen the store, check every committed entry bit-exact against a recomputation
              (the same batches computed in this process), then resume: the rerun must compute exactly what was
              missing, and the store must end with one entry per distinct text.
  concurrent  while a child fills, reader processes (plain, and through DataLoader workers started with fork and
              with spawn) read what is committed and compare it with the recomputation; a second writer must get
              a clear StoreLockedError.
  damage      copies of a filled store with bytes flipped in data pages, pages zeroed (leaf, branch, overflow) and
              the data file truncated; each is read (in a child process, so a crash is seen) and verified. Every
              outcome must be a clear ember error or untouched values (the bytes hit a free page): no crash and no
              silent difference.
  full_disk   a fill into a tmpfs too small for the store (StoreFullError, commits kept and exact), then the
              tmpfs is grown and the fill resumed (needs root to mount; reported as skipped otherwise).

Usage:
  python benchmarks/faults.py --trials 20                 # CLINC150 train texts, packaged MiniLM-L6, layer 3
  python benchmarks/faults.py --trials 2 --examples 120 --parts kill,damage   # a quick run
Prints a final JSON line with kill_trials, entries_lost, entries_corrupt, reopen_failures and per-part results.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
CLINC = ROOT / ".." / "shared" / "data" / "clinc150"
PAGE = 4096
PARTS = ("kill", "concurrent", "damage", "full_disk")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(CLINC), help="texts to store (any ember --data format)")
    p.add_argument("--split", default=None, help="split of --data (default: its default, train)")
    p.add_argument("--model", default=None, help="model folder or hub id (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--text-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--examples", type=int, default=1500, help="texts per store (spread over the split)")
    p.add_argument("--layer", type=int, default=3)
    p.add_argument("--trials", type=int, default=20, help="SIGKILL-during-fill trials")
    p.add_argument("--batch-sizes", default="32,4", help="fill batch sizes, alternated over the kill trials")
    p.add_argument("--flips", type=int, default=20, help="byte-flip trials in the damage part")
    p.add_argument("--zero-pages", type=int, default=3, help="pages zeroed per page kind (leaf, branch, overflow)")
    p.add_argument("--truncations", default="half,8KiB,last-page,empty", help="sizes the data file is cut to")
    p.add_argument("--readers", type=int, default=3, help="plain reader processes in the concurrent part")
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="folder for the stores (default: a temporary one)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # fill | read | load (internal)
    p.add_argument("--store", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--workers", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- shared set-up -------------------------------------------------------------------------------------------------
def texts_and_model(args):
    from ember.data import load_examples, spread
    from ember.models import load_model

    ex = load_examples(args.data, split=args.split, text_column=args.text_column, label_column=args.label_column)
    texts = spread(ex.texts, args.examples)
    model, tok = load_model(args.model, "embedding")
    return ex, texts, model, tok


def recycler(model, tok, store, args, **kw):
    from ember.recycle import RecycleConfig, Recycler

    return Recycler(model, tok, store, RecycleConfig(layer=args.layer), **kw)


def reference(model, tok, texts, args, batch_size: int) -> dict[bytes, torch.Tensor]:
    """The states of every text, computed in memory with the batches a fill from empty computes."""
    rec = recycler(model, tok, None, args)
    report = rec.fill(texts, batch_size=batch_size, progress=False)
    keys = list(dict.fromkeys(report.keys))
    return {k: e["states"] for k, e in zip(keys, rec.store.get(keys), strict=True)}


def save_reference(ref: dict[bytes, torch.Tensor], path: Path) -> None:
    save_file({k.hex(): v.contiguous() for k, v in ref.items()}, str(path))  # safetensors: no pickle


def child(args, mode: str, store: Path, batch_size: int = 32, workers: str = "", timeout: float | None = None,
          **popen) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", mode, "--store", str(store), "--batch-size", str(batch_size),
           "--examples", str(args.examples), "--data", args.data, "--layer", str(args.layer), "--workers", workers]
    for flag, value in (("--model", args.model), ("--split", args.split), ("--text-column", args.text_column),
                        ("--label-column", args.label_column)):
        if value is not None:
            cmd += [flag, value]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def compare(store_path: Path, ref: dict[bytes, torch.Tensor]) -> dict:
    """Open the store read-only and check every entry in it against ``ref`` (bit-exact)."""
    from ember.store import ActivationStore

    try:
        st = ActivationStore.open(store_path, None, readonly=True)
    except Exception as exc:  # a store a kill left unreadable: counted, not raised
        return {"reopened": False, "error": f"{type(exc).__name__}: {exc}", "entries": 0, "corrupt": 0, "unknown": 0}
    with st:
        keys = list(st.kv.keys())
        corrupt = unknown = 0
        for k, e in zip(keys, st.get(keys), strict=True):
            if k not in ref:
                unknown += 1
            elif not torch.equal(e["states"], ref[k]):
                corrupt += 1
        return {"reopened": True, "entries": len(keys), "corrupt": corrupt, "unknown": unknown}


# -- children ------------------------------------------------------------------------------------------------------
def child_fill(args) -> None:
    """Fill the store, printing the committed count after every batch (a kill may cut the last line)."""
    _, texts, model, tok = texts_and_model(args)
    rec = recycler(model, tok, args.store, args)
    put = rec.store.put
    committed = [len(rec.store)]

    def counted(keys, entries):
        put(keys, entries)
        committed[0] += len(keys)
        print(json.dumps({"committed": committed[0]}), flush=True)

    rec.store.put = counted
    print(json.dumps({"ready": committed[0]}), flush=True)
    report = rec.fill(texts, batch_size=args.batch_size, progress=False)
    print(json.dumps({"done": report.computed}), flush=True)
    rec.close()


def child_read(args) -> None:
    """Read what is committed until the fill records its split; compare every entry with the reference."""
    from ember.store import ActivationStore

    ref = {bytes.fromhex(k): v for k, v in load_file(str(Path(args.store).parent / "reference.safetensors")).items()}
    rng, checked, wrong, errors, deadline = random.Random(os.getpid()), 0, 0, [], time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            with ActivationStore.open(args.store, None, readonly=True) as st:
                keys = list(st.kv.keys())
                if keys:
                    sample = rng.sample(keys, min(64, len(keys)))
                    if args.workers:
                        c, w = read_through_loader(st, sample, ref, args.workers)
                    else:
                        c, w = len(sample), sum(not torch.equal(e["states"], ref[k]) for k, e in zip(sample, st.get(sample), strict=True))
                    checked, wrong = checked + c, wrong + w
                if st.split_names():
                    break
        except Exception as exc:  # noqa: BLE001  (every failure is a finding, reported by name)
            if "has not been filled yet" not in str(exc) and "no store at" not in str(exc):
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
    print(json.dumps({"checked": checked, "wrong": wrong, "errors": errors[:5], "error_count": len(errors)}), flush=True)


class _Entries(torch.utils.data.Dataset):
    def __init__(self, store, keys) -> None:
        self.store, self.keys = store, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        return self.keys[i].hex(), self.store.get([self.keys[i]])[0]["states"]


def read_through_loader(store, keys, ref, context: str) -> tuple[int, int]:
    loader = torch.utils.data.DataLoader(_Entries(store, keys), batch_size=None, num_workers=2,
                                         multiprocessing_context=context)
    checked = wrong = 0
    for hexkey, states in loader:
        checked += 1
        wrong += not torch.equal(states, ref[bytes.fromhex(hexkey)])
    return checked, wrong


def child_load(args) -> None:
    """Open a (damaged) store and read every entry its splits list; print what happened."""
    from ember.errors import EmberError
    from ember.store import ActivationStore

    ref = {bytes.fromhex(k): v for k, v in load_file(str(Path(args.store).parent / "reference.safetensors")).items()}
    try:
        with ActivationStore.open(args.store, None, readonly=True) as st:
            keys = st.get_split("train").keys["states"]
            st.missing(keys)
            entries = st.get(keys)
        differ = sum(e is None or not torch.equal(e["states"], ref[k]) for k, e in zip(keys, entries, strict=True))
        print(json.dumps({"outcome": "silent" if differ else "unaffected", "differ": differ}), flush=True)
    except EmberError as exc:
        clear = any(fix in str(exc) for fix in ("fill it again", "ember store verify", "Refill it"))
        print(json.dumps({"outcome": "clear_error" if clear else "unclear_error", "error": f"{type(exc).__name__}: {exc}"[:300]}))
    except Exception as exc:  # noqa: BLE001  (a foreign exception is a finding)
        print(json.dumps({"outcome": "raw_error", "error": f"{type(exc).__name__}: {exc}"[:300]}))


def last_json(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


# -- part 1: kill -9 during fills ----------------------------------------------------------------------------------
def part_kill(args, ctx) -> dict:
    rng = random.Random(args.seed)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    trials = []
    for t in range(args.trials):
        b = sizes[t % len(sizes)]
        trials.append(kill_trial(args, ctx, b, ctx["work"] / f"kill-{t}", rng.random(), rng.random()))
        print(f"kill trial {t + 1}/{args.trials}: {trials[-1]}", file=sys.stderr, flush=True)
    return {
        "trials": len(trials),
        "entries_lost": sum(x["lost"] for x in trials),
        "entries_corrupt": sum(x["corrupt"] for x in trials),
        "reopen_failures": sum(not x["reopened"] for x in trials),
        "partial_batches": sum(x["partial_batch"] for x in trials),
        "resume_failures": sum(not x["resume_ok"] for x in trials),
        "killed_before_any_commit": sum(x["committed_seen"] == 0 for x in trials),
        "finished_before_kill": sum(x["finished_before_kill"] for x in trials),
        "resume_max_abs_diff": max((x["resume_max_abs_diff"] for x in trials), default=0.0),
        "trials_detail": trials,
    }


def kill_trial(args, ctx, batch_size: int, store: Path, fraction: float, pause: float) -> dict:
    """Fill in a child; once ``fraction`` of the texts are committed, wait ``pause`` of a batch's time and kill -9."""
    ref = ctx["refs"][batch_size]
    store.mkdir(parents=True)
    p = child(args, "fill", store / "s", batch_size)
    if not json.loads(p.stdout.readline() or "{}"):  # "ready": the model is loaded, the fill starts now
        raise RuntimeError(f"the fill child did not start: {p.communicate()[1][-500:]}")
    seen = 0
    while seen < fraction * len(ref):  # a random moment of the fill, whatever the machine's speed
        line = json.loads(p.stdout.readline() or '{"done": 0}')
        if "done" in line:
            break
        seen = line["committed"]
    time.sleep(pause * ctx["fill_seconds"][batch_size] * batch_size / len(ref))  # within the next batch
    p.send_signal(signal.SIGKILL)
    out, _ = p.communicate()
    seen = max([seen] + [x["committed"] for x in map(json.loads, filter(None, out.splitlines())) if "committed" in x])
    found = compare(store / "s", ref)
    result = {"batch_size": batch_size, "kill_after": round(fraction, 3), "committed_seen": seen,
              "entries": found["entries"], "reopened": found["reopened"], "corrupt": found["corrupt"] + found["unknown"],
              "lost": max(0, seen - found["entries"]), "finished_before_kill": found["entries"] == len(ref),
              "partial_batch": found["entries"] % batch_size != 0 and found["entries"] != len(ref)}
    result.update(resume(args, ctx, store / "s", batch_size, found["entries"]))
    shutil.rmtree(store, ignore_errors=True)
    return result


def resume(args, ctx, store: Path, batch_size: int, had: int) -> dict:
    """Rerun the fill: it must compute exactly what is missing; the store ends whole, old entries unchanged."""
    ref = ctx["refs"][batch_size]
    rec = recycler(ctx["model"], ctx["tok"], store, args)
    try:
        report = rec.fill(ctx["texts"], batch_size=batch_size, progress=False)
        keys = list(ref)
        entries = rec.store.get(keys)
        diff = max(float((e["states"] - ref[k]).abs().max()) for k, e in zip(keys, entries, strict=True))
        ok = report.computed == len(ref) - had and len(rec.store) == len(ref) and rec.store.verify().ok
    finally:
        rec.close()
    return {"resume_computed": report.computed, "resume_ok": ok, "resume_max_abs_diff": diff}


# -- part 2: readers and a second writer during a fill -------------------------------------------------------------
def part_concurrent(args, ctx) -> dict:
    from ember.errors import StoreLockedError
    from ember.store import ActivationStore

    work = ctx["work"] / "concurrent"
    work.mkdir(parents=True)
    save_reference(ctx["refs"][32], work / "reference.safetensors")
    store = work / "s"
    writer = child(args, "fill", store, 32)
    json.loads(writer.stdout.readline() or "{}")  # ready: the writer holds the lock from here on
    readers = [child(args, "read", store) for _ in range(args.readers)]
    readers += [child(args, "read", store, workers=w) for w in ("fork", "spawn")]
    try:
        ActivationStore.open(store, ctx["fingerprint"])
        second = {"clear_error": False, "error": "a second writer opened the store"}
    except StoreLockedError as exc:
        second = {"clear_error": "being written by another process" in str(exc), "error": str(exc)[:200]}
    writer_out, writer_err = writer.communicate()
    results = []
    for r, kind in zip(readers, ["plain"] * args.readers + ["dataloader-fork", "dataloader-spawn"], strict=True):
        out, err = r.communicate()
        results.append({"reader": kind, "returncode": r.returncode, **(last_json(out) or {"error": err[-300:]})})
    found = compare(store, ctx["refs"][32])
    return {
        "readers": results,
        "checked_reads": sum(x.get("checked", 0) for x in results),
        "wrong_reads": sum(x.get("wrong", 0) for x in results),
        "reader_errors": sum(x.get("error_count", 0) + (x["returncode"] != 0) for x in results),
        "writer_ok": writer.returncode == 0 and found["entries"] == len(ctx["refs"][32]) and found["corrupt"] == 0,
        "writer_error": writer_err[-300:] if writer.returncode else "",
        "second_writer": second,
    }


# -- part 3: damaged copies of a store -----------------------------------------------------------------------------
def part_damage(args, ctx) -> dict:
    import lmdb

    work = ctx["work"] / "damage"
    work.mkdir(parents=True)
    save_reference(ctx["refs"][32], work / "reference.safetensors")
    base, live = work / "base", work / "live"
    rec = recycler(ctx["model"], ctx["tok"], base, args)
    rec.fill(ctx["texts"], batch_size=32, progress=False)
    rec.close()
    live.mkdir()
    with lmdb.open(str(base), readonly=True, lock=False, max_dbs=2) as env:
        env.copy(str(live), compact=True)  # no free pages: a zeroed page below is always one in use
    rng = random.Random(args.seed + 1)
    cases = [(f"flip-{i}", base, flip_bytes(rng)) for i in range(args.flips)]
    for kind, flag in (("leaf", 2), ("branch", 1), ("overflow", 4)):
        pages = lmdb_pages(live, flag)
        cases += [(f"zero-{kind}-{p}", live, zero_page(p)) for p in rng.sample(pages, min(args.zero_pages, len(pages)))]
    size = (base / "data.mdb").stat().st_size
    cuts = {"half": size // 2, "8KiB": 8192, "last-page": size - PAGE, "empty": 0}
    cases += [(f"truncate-{name}", base, truncate(cuts[name])) for name in args.truncations.split(",") if name]
    results = [damage_case(args, work, *case) for case in cases]
    outcomes = {}
    for r in results:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    return {"cases": len(results), "outcomes": outcomes,
            "crashes": outcomes.get("crash", 0), "silent": outcomes.get("silent", 0),
            "unclear": outcomes.get("unclear_error", 0) + outcomes.get("raw_error", 0),
            "verify_missed": sum(r["outcome"] != "unaffected" and r["verify_ok"] for r in results),
            "verify_crashes": sum(r["verify_crashed_caller"] for r in results), "detail": results}


def damage_case(args, work: Path, name: str, source: Path, damage) -> dict:
    from ember.store.verify import verify_store

    copy = work / "reference-dir" / "s"
    shutil.rmtree(copy.parent, ignore_errors=True)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("lock.mdb", "writer.lock"))
    shutil.copy(work / "reference.safetensors", copy.parent / "reference.safetensors")
    what = damage(copy / "data.mdb")
    p = child(args, "load", copy)
    out, err = p.communicate(timeout=600)
    if p.returncode < 0:
        result = {"outcome": "crash", "signal": signal.Signals(-p.returncode).name, "stderr": err[-200:]}
    else:
        result = last_json(out) or {"outcome": "raw_error", "error": err[-300:]}
    try:
        report = verify_store(copy, "lmdb", timeout=600)
        verify = {"verify_ok": report.ok, "verify_crashed_caller": False,
                  "verify_found": (report.problems or [""])[0][:160]}
    except Exception as exc:  # noqa: BLE001
        verify = {"verify_ok": False, "verify_crashed_caller": False, "verify_found": f"raised {type(exc).__name__}: {exc}"[:160]}
    return {"case": name, "damage": what, **result, **verify}


def lmdb_pages(path: Path, flag: int) -> list[int]:
    data = (path / "data.mdb").read_bytes()
    return [i for i in range(2, len(data) // PAGE)
            if struct.unpack_from("<QHH", data, i * PAGE)[0] == i and struct.unpack_from("<QHH", data, i * PAGE)[2] & flag]


def flip_bytes(rng: random.Random):
    """16 to 64 bytes flipped inside one 4 KiB window past the meta pages, as a bad sector or a hex editor does."""
    count, seed = rng.randint(16, 64), rng.random()

    def damage(data: Path) -> str:
        r = random.Random(seed)
        size = data.stat().st_size
        start = r.randrange(2 * PAGE, max(2 * PAGE + 1, size - PAGE))
        with open(data, "r+b") as f:
            for _ in range(count):
                at = start + r.randrange(PAGE)
                f.seek(at)
                b = f.read(1)
                f.seek(at)
                f.write(bytes([b[0] ^ r.randint(1, 255)]))
        return f"{count} bytes flipped in [{start}, {start + PAGE})"

    return damage


def zero_page(page: int):
    def damage(data: Path) -> str:
        with open(data, "r+b") as f:
            f.seek(page * PAGE)
            f.write(bytes(PAGE))
        return f"page {page} zeroed"

    return damage


def truncate(size: int):
    def damage(data: Path) -> str:
        with open(data, "r+b") as f:
            f.truncate(size)
        return f"cut to {size} bytes"

    return damage


# -- part 4: a full disk -------------------------------------------------------------------------------------------
def part_full_disk(args, ctx) -> dict:
    mount = ctx["work"] / "tmpfs"
    mount.mkdir(parents=True)
    need = ctx["store_bytes"]
    small = (1 << 20) + need // 2  # past the 1 MiB a new store needs free (DISK_MARGIN), half the store short
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={small}", "tmpfs", str(mount)], capture_output=True).returncode:
        return {"skipped": "cannot mount a tmpfs here (needs root)"}
    try:
        save_reference(ctx["refs"][32], mount.parent / "reference.safetensors")
        store = mount / "s"
        p = child(args, "fill", store, 32)
        out, err = p.communicate(timeout=1800)
        full = "StoreFullError" in err and "rerun the same command" in err
        before = compare(store, ctx["refs"][32])
        subprocess.run(["mount", "-o", f"remount,size={need * 3}", str(mount)], check=True)
        after = resume(args, ctx, store, 32, before["entries"])
        return {"tmpfs_bytes": small, "store_bytes": need, "filled_before_full": before["entries"],
                "clear_full_error": full and p.returncode != 0, "corrupt_before_resume": before["corrupt"],
                "reopened": before["reopened"], **after, "error": err.strip().splitlines()[-1][:300] if err.strip() else ""}
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


# -- main ----------------------------------------------------------------------------------------------------------
def prepare(args, work: Path) -> dict:
    ex, texts, model, tok = texts_and_model(args)
    refs, seconds = {}, {}
    for b in sorted({int(x) for x in args.batch_sizes.split(",")} | {32}):
        start = time.perf_counter()
        refs[b] = reference(model, tok, texts, args, b)
        seconds[b] = time.perf_counter() - start
    rec = recycler(model, tok, None, args)
    store_bytes = sum(v.numel() * v.element_size() + 200 for v in refs[32].values())
    return {"work": work, "texts": texts, "model": model, "tok": tok, "refs": refs, "fill_seconds": seconds,
            "fingerprint": rec.fingerprint, "store_bytes": store_bytes,
            "rows_used": f"{len(texts)} texts spread over {ex.describe()}"}


def main(args) -> dict:
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from {list(PARTS)}")
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="ember-faults-", dir=args.work) as tmp:
        ctx = prepare(args, Path(tmp))
        print(f"faults: {ctx['rows_used']}; fill of {len(ctx['texts'])} texts took "
              f"{ {b: round(s, 1) for b, s in ctx['fill_seconds'].items()} } s", file=sys.stderr, flush=True)
        results = {}
        for part in parts:
            start = time.perf_counter()
            results[part] = globals()[f"part_{part}"](args, ctx)
            results[part]["seconds"] = round(time.perf_counter() - start, 1)
            print(f"{part}: done in {results[part]['seconds']} s", file=sys.stderr, flush=True)
    kill = results.get("kill", {})
    return {"script": "faults", "model": args.model or "all-MiniLM-L6-v2 (packaged)", "layer": args.layer,
            "rows_used": ctx["rows_used"], "kill_trials": kill.get("trials", 0),
            "entries_lost": kill.get("entries_lost", 0), "entries_corrupt": kill.get("entries_corrupt", 0),
            "reopen_failures": kill.get("reopen_failures", 0), **results}


if __name__ == "__main__":
    ARGS = parse()
    if ARGS.child:
        if ARGS.child != "fill":  # readers and checks: one thread each (the fill runs as a user's would)
            torch.set_num_threads(1)
        {"fill": child_fill, "read": child_read, "load": child_load}[ARGS.child](ARGS)
    else:
        print(json.dumps(main(ARGS), default=str))
