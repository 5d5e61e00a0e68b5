"""The checks behind ``ember store verify``, on a store that is already open: every entry, every record, every
count (see :mod:`ember.store.verify`, which opens a store by path, for what is checked and why a child process).

This module does not import :mod:`ember.store.activations`, so that ``ActivationStore.verify()`` can use it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ember.errors import StoreCorruptError, StoreError
from ember.store.codec import checksum_problem, decode
from ember.store.keys import STATES
from ember.store.registry import backend_spec

if TYPE_CHECKING:
    from ember.store.activations import ActivationStore

MAX_LISTED = 20  # problems listed in a report; the rest are counted
PAGE = 128  # entries read per transaction during a walk (also how finely a crash is located)


@dataclass
class VerifyReport:
    """What a store check found.

    ``problems`` lists the first :data:`MAX_LISTED` problems (``problem_count`` counts all of them);
    ``crashed`` names how the walk's child process died (a signal), when it did.
    """

    path: str | None
    backend: str
    entries: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    crashed: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem_count == 0 and self.crashed is None

    def add(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(problem)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        """One paragraph for a terminal: OK, or what is damaged and the fix."""
        if self.ok:
            return f"the store at {self.path} is intact: {self.entries} entries checked, every record readable"
        listed = "\n  ".join(self.problems)
        more = self.problem_count - len(self.problems)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return (
            f"the store at {self.path} is damaged: {self.problem_count} problem(s) after {self.entries} entries "
            f"checked:\n  {listed}{tail}\nIts entries cannot be trusted: delete the store and fill it again (rerun "
            "the fill: it computes everything)."
        )


def verify_open(store: ActivationStore) -> VerifyReport:
    """Check a store this process has open: in a child process where the backend allows other readers."""
    backend = _backend_of(store)
    if store.path is not None and backend_spec(backend).concurrent_readers:
        return verify_in_child(Path(store.path), backend, None)
    report = VerifyReport(None if store.path is None else str(store.path), backend)
    walk(store, report)
    return report


def _backend_of(store: ActivationStore) -> str:
    return getattr(store.kv, "backend", "memory")  # each backend class names itself


def walk(store: ActivationStore, report: VerifyReport, progress: Callable[[int, bytes], None] | None = None) -> None:
    """Check every entry and record of ``store`` into ``report`` (``progress(entries, last_key)`` after each page)."""
    kv, ordered = store.kv, _backend_of(store) != "memory"
    start, last = b"", None
    try:
        while True:
            page = kv.items(start, PAGE)  # type: ignore[attr-defined]
            page = [(k, v) for k, v in page if last is None or k > last or _out_of_order(report, k, last, ordered)]
            if not page:
                break
            _check_page(store, page, report)
            last = max(k for k, _ in page)
            start = last + b"\x00"
            report.entries += len(page)
            if progress is not None:
                progress(report.entries, last)
    except StoreError as exc:  # the backend refused a page: the walk cannot go on past it
        report.add(f"reading past entry {report.entries}{'' if last is None else f' (key {last.hex()})'} failed: "
                   f"{_reason(exc)}")
    for check in (_check_count, _check_records):
        try:
            check(store, report)
        except StoreError as exc:
            report.add(f"{check.__doc__.split(':')[0]}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    """The backend's words inside a damaged-store message (what is in its parentheses), else the message."""
    text = str(exc)
    return text[text.index("(") + 1 : text.index(")")] if "is damaged (" in text else text


def _out_of_order(report: VerifyReport, key: bytes, last: bytes, ordered: bool) -> bool:
    """Record a key that does not come after ``last`` in a sorted backend; it is left out of the walk."""
    if ordered:
        report.add(f"entry {key.hex()} comes after {last.hex()} in the walk: the keys are out of order (a damaged page)")
    return False


def _check_page(store: ActivationStore, page: list[tuple[bytes, bytes]], report: VerifyReport) -> None:
    keys = [k for k, _ in page]
    for k, found in zip(keys, store.kv.has_many(keys), strict=True):
        if not found:
            report.add(f"entry {k.hex()} is in the store but a lookup does not find it (a damaged branch page; a "
                       "fill would store it a second time)")
    for k, v in page:
        problem = checksum_problem(v, k)
        if problem is None:
            try:
                decode(v, k)
            except StoreCorruptError:
                problem = "it passes its checksum but does not decode"
        if problem is not None:
            report.add(f"entry {k.hex()}: {problem}")


def _check_count(store: ActivationStore, report: VerifyReport) -> None:
    """counting the entries: the count the store keeps equals the number walked."""
    try:
        count = len(store.kv)
    except StoreError as exc:
        report.add(f"the store's entry count cannot be read: {exc}")
        return
    if count != report.entries:
        report.add(f"the store counts {count} entries but a walk in key order reads {report.entries}")


def _check_records(store: ActivationStore, report: VerifyReport) -> None:
    """checking the recorded splits: label names and split records readable; every key a split's ``states``
    column lists is stored."""
    try:
        store.label_names  # noqa: B018  (read to check it)
    except (ValueError, StoreError) as exc:
        report.add(f"the label names cannot be read: {exc}")
    try:
        names = store.split_names()
    except (ValueError, StoreError) as exc:
        report.add(f"the list of splits cannot be read: {exc}")
        return
    for name in names:
        try:
            split = store.find_split(name)
        except StoreCorruptError:
            report.add(f"split {name!r}: its record is damaged (checksum or decoding)")
            continue
        if split is None:
            report.add(f"split {name!r} is listed but has no record")
            continue
        keys = list(dict.fromkeys(split.keys.get(STATES, ())))
        if keys:
            absent = [k for k, has in zip(keys, store.kv.has_many(keys), strict=True) if not has]
            if absent:
                report.add(f"split {name!r} lists {len(absent)} keys the store does not find (first {absent[0].hex()})")


# -- the child process ------------------------------------------------------------------------------------------
def verify_in_child(path: Path, backend: str, timeout: float | None) -> VerifyReport:
    cmd = [sys.executable, "-m", "ember.store.verify", str(path), "--backend", backend]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        report = VerifyReport(str(path), backend)
        report.add(f"the check did not finish within {timeout:g} s")
        return report
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    final = next((x["report"] for x in reversed(lines) if "report" in x), None)
    if final is not None and done.returncode == 0:
        final.pop("ok", None)
        return VerifyReport(**final)
    report = VerifyReport(str(path), backend)
    seen = [x for x in lines if "checked" in x]
    report.entries = seen[-1]["checked"] if seen else 0
    after = f" after key {seen[-1]['last']}" if seen else " before reading the first page of entries"
    report.crashed = _death(done.returncode)
    said = (done.stderr.strip().splitlines() or [""])[-1][:300]
    report.add(
        f"corrupt at entry {report.entries + 1} or soon after ({after.strip()}): reading it {report.crashed}"
        f"{f' ({said})' if said else ''}. The store's pages are damaged there"
    )
    return report


def _death(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed the reading process ({signal.Signals(-returncode).name}, inside the backend's C code)"
        except ValueError:
            return f"killed the reading process (signal {-returncode})"
    return f"ended the reading process with exit status {returncode}"
