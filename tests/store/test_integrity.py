"""A damaged store is an error that names the fix: checksums, truncated files, damaged pages, ``verify``."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from ember.cli import app
from ember.errors import StoreCorruptError, StoreFormatError
from ember.store import ActivationStore, Fingerprint, Split, content_key, open_kv
from ember.store.codec import decode, encode

PAGE = 4096


def fp(**kw) -> Fingerprint:
    base = dict(kind="recycle", architecture="BertModel/bert", weights="w1", layer=3, dtype="float32", tokenizer="t1", max_length=128)
    return Fingerprint(**{**base, **kw})


def filled(path, n=300, fill_value=None, backend="lmdb"):
    """A store of ``n`` entries (12x32 float32 states; all ``fill_value`` when given) and a 'train' split of them."""
    keys = [content_key([i, i + 1]) for i in range(n)]
    g = torch.Generator().manual_seed(0)
    with ActivationStore.open(path, fp(), backend=backend) as st:
        for i in range(0, n, 32):
            part = keys[i : i + 32]
            st.put(part, [{"states": torch.randn(12, 32, generator=g) if fill_value is None else torch.full((12, 32), fill_value)}
                          for _ in part])
        st.add_split("train", Split({"states": keys}, labels=[i % 3 for i in range(n)]))
    return keys


def lmdb_pages(path, flag: int) -> list[int]:
    """Page numbers of ``data.mdb`` whose header carries ``flag`` (1 branch, 2 leaf, 4 overflow)."""
    data = (path / "data.mdb").read_bytes()
    found = []
    for i in range(2, len(data) // PAGE):
        pgno, _, flags = struct.unpack_from("<QHH", data, i * PAGE)
        if pgno == i and flags & flag:
            found.append(i)
    return found


def run_child(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a child interpreter, so that a crash (SIGBUS, SIGABRT) fails the test instead of ending it."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


# -- checksums --------------------------------------------------------------------------------------------------
def test_flipped_bytes_in_a_data_page_raise_naming_key_store_and_fix(tmp_path):
    """Was: the entry decoded to other numbers with no error (17 of 19 trials), and fill/train used them."""
    keys = filled(tmp_path / "s", n=40, fill_value=1.0)
    data = tmp_path / "s" / "data.mdb"
    raw = bytearray(data.read_bytes())
    ones, at, flipped = struct.pack("<f", 1.0) * 64, 0, 0
    while (at := raw.find(ones, at)) >= 0:  # one byte inside a float of each entry (and each stale copy of a page)
        raw[at + 129] ^= 0x5A
        at, flipped = at + 12 * 32 * 4, flipped + 1
    assert flipped >= 40
    data.write_bytes(bytes(raw))
    with ActivationStore.open(tmp_path / "s", fp(), readonly=True) as st, pytest.raises(StoreCorruptError) as err:
        st.get(keys)
    msg = str(err.value)
    assert "a store entry (key " in msg and f"in the store at {tmp_path / 's'} is damaged: its checksum does not match" in msg
    assert f"Run `ember store verify {tmp_path / 's'}`" in msg and "delete the store and fill it again" in msg
    assert "recycle" not in msg  # the encoder cache and teacher outputs share the store


def test_a_value_filed_under_another_key_fails_its_checksum():
    st = ActivationStore.open(None, fp(), backend="memory")
    st.put([b"a" * 16, b"b" * 16], [{"states": torch.ones(2, 2)}, {"states": torch.zeros(2, 2)}])
    st.kv.put_many([(b"b" * 16, st.kv.get_many([b"a" * 16])[0])])  # a damaged key byte in a page does this
    assert torch.equal(st.get([b"a" * 16])[0]["states"], torch.ones(2, 2))
    with pytest.raises(StoreCorruptError, match=r"key 6262.*its checksum does not match"):
        st.get([b"b" * 16])


def test_every_entry_carries_its_checksum_and_split_records_too():
    payload = encode({"x": torch.arange(4.0)}, b"k")
    assert decode(payload, b"k")["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(StoreCorruptError, match="checksum does not match"):
        decode(payload[:-1] + bytes([payload[-1] ^ 1]), b"k")
    st = ActivationStore.open(None, fp(), backend="memory")
    st.add_split("train", Split({"states": [b"k" * 16]}))
    import base64

    record = bytearray(base64.b64decode(st.kv.get_meta("split:train")))
    record[-1] ^= 1
    st.kv.set_meta("split:train", base64.b64encode(bytes(record)).decode())
    with pytest.raises(StoreCorruptError, match=r"key 73706c69743a747261696e.*checksum does not match"):
        st.get_split("train")


# -- formats ----------------------------------------------------------------------------------------------------
def test_a_store_without_checksums_is_refused_not_read_unchecked(tmp_path):
    with ActivationStore.open(tmp_path / "s", fp()) as st:
        assert st.kv.get_meta("format") == "2"
    kv = open_kv(tmp_path / "old")
    kv.set_meta("fingerprint", fp().to_json())  # what an ember before checksums wrote: no format value
    kv.put_many([(b"k" * 16, b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14)])
    kv.close()
    for readonly in (False, True):
        with pytest.raises(StoreFormatError, match=r"was made by an older ember: its entries carry no checksum .* "
                           r"Refill it: delete the folder and rerun the fill\."):
            ActivationStore.open(tmp_path / "old", None if readonly else fp(), readonly=readonly)
    kv = open_kv(tmp_path / "s")
    kv.set_meta("format", "9")
    kv.close()
    with pytest.raises(StoreFormatError, match=r"made by a newer ember \(entry format 9; this one reads format 2\)"):
        ActivationStore.open(tmp_path / "s", fp())


# -- files cut short --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cut", ["half", "8KiB"])
def test_a_truncated_data_file_is_an_error_not_a_sigbus(tmp_path, cut):
    """Was: the process died with SIGBUS (exit 135, no message) on open, in the API and the CLI."""
    filled(tmp_path / "s")
    data = tmp_path / "s" / "data.mdb"
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size // 2 if cut == "half" else 8192)
    for readonly in (True, False):
        r = run_child(f"""
            from ember.errors import StoreCorruptError
            from ember.store import ActivationStore
            try:
                ActivationStore.open({str(tmp_path / 's')!r}, None, readonly={readonly})
            except StoreCorruptError as e:
                print("REFUSED", e)
            """)
        assert r.returncode == 0, (r.returncode, r.stderr[-500:])
        assert "REFUSED the store at" in r.stdout and "is truncated: its data file has" in r.stdout
        assert "Delete it and fill it again" in r.stdout


def test_an_empty_data_file_says_so_and_names_the_fix(tmp_path):
    """Was: 'Bad file descriptor' and no fix."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "data.mdb").write_bytes(b"")
    for readonly in (True, False):
        with pytest.raises(StoreCorruptError, match=r"is empty: its data file data\.mdb has 0 bytes .* Delete it and fill "
                           r"it again"):
            ActivationStore.open(tmp_path / "s", fp(), readonly=readonly)


# -- damaged pages and verify -----------------------------------------------------------------------------------
def damaged_copy(tmp_path, kind: str):
    """A copy of a filled store with one of its pages damaged: ``zero-leaf`` or ``zero-branch``."""
    import lmdb

    keys = filled(tmp_path / "s", n=600)
    (tmp_path / kind).mkdir()
    with lmdb.open(str(tmp_path / "s"), readonly=True, lock=False, max_dbs=2) as env:
        env.copy(str(tmp_path / kind), compact=True)  # no free pages left: every page found below is live
    pages = lmdb_pages(tmp_path / kind, 2 if kind == "zero-leaf" else 1)
    page = pages[len(pages) // 2]
    with open(tmp_path / kind / "data.mdb", "r+b") as f:
        f.seek(page * PAGE)
        f.write(bytes(PAGE))
    return keys


def test_backend_errors_on_damaged_pages_are_ember_errors_naming_verify(tmp_path):
    """Was: a raw lmdb.CorruptedError traceback from recycle train/fill."""
    keys = damaged_copy(tmp_path, "zero-branch")
    with ActivationStore.open(tmp_path / "zero-branch", fp(), readonly=True) as st, pytest.raises(StoreCorruptError) as err:
        st.get(keys)
    assert "is damaged (LMDB: " in str(err.value) and "Run `ember store verify" in str(err.value)


def test_verify_reports_an_abort_inside_lmdb_instead_of_dying(tmp_path):
    """A zeroed leaf page makes LMDB abort the process (Assertion 'IS_LEAF(mp)' failed): verify survives it."""
    damaged_copy(tmp_path, "zero-leaf")
    with ActivationStore.open(tmp_path / "s", fp(), readonly=True) as st:
        assert st.verify().ok and st.verify().entries == 600
    with ActivationStore.open(tmp_path / "zero-leaf", fp(), readonly=True) as st:
        report = st.verify()
    assert not report.ok and report.crashed is not None and "SIGABRT" in report.crashed
    assert report.problems[0].startswith("corrupt at entry ") and "IS_LEAF" in report.problems[0]
    assert "delete the store and fill it again" in report.summary()


def test_verify_lists_each_damaged_entry(tmp_path):
    keys = filled(tmp_path / "s", n=64)
    with ActivationStore.open(tmp_path / "s", fp()) as st:
        good = st.kv.get_many([keys[5]])[0]
        st.kv.put_many([(keys[7], good)])  # entry 7 now holds entry 5's bytes
        report = st.verify()
    assert report.problems == [f"entry {keys[7].hex()}: its checksum does not match its {len(good) - 8} bytes"]
    assert report.entries == 64 and not report.ok


def test_store_verify_command(tmp_path):
    filled(tmp_path / "s", n=50)
    runner = CliRunner()
    r = runner.invoke(app, ["store", "verify", str(tmp_path / "s"), "--json"])
    assert r.exit_code == 0, r.output
    assert "is intact: 50 entries checked" in r.output
    damaged_copy(tmp_path / "d", "zero-leaf")
    r = runner.invoke(app, ["store", "verify", str(tmp_path / "d" / "zero-leaf")])
    assert r.exit_code == 1 and "corrupt at entry" in r.output and "fill it again" in r.output
    r = runner.invoke(app, ["store", "verify", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "no store at" in r.output


def test_entries_a_recorded_split_lists_but_lookups_miss_mean_damage(tmp_path, monkeypatch):
    """After a damaged branch page a rerun 'stored 13 new examples' and the store held 1,512 entries for 1,500
    keys: lookups routed to the wrong leaf said 'missing' and the fill wrote the entries a second time."""
    keys = filled(tmp_path / "s", n=100)
    with ActivationStore.open(tmp_path / "s", fp()) as st:
        real = st.kv.has_many
        monkeypatch.setattr(st.kv, "has_many", lambda ks: [False if k in keys[40:53] else h for k, h in zip(ks, real(ks), strict=True)])
        with pytest.raises(StoreCorruptError, match=r"is damaged: 13 entries that its recorded splits list as stored cannot "
                           r"be found .*Run `ember store verify"):
            st.missing(keys + [content_key([9999])])
        assert st.missing([content_key([9999])]) == [content_key([9999])]  # a new key alone is just missing


def test_a_damaged_branch_key_is_found_by_fill_and_verify_not_written_twice(tmp_path):
    """The real damage behind '13 new examples, 1,512 entries for 1,500 keys': a branch page's separator key changed
    (its page numbers intact) sends lookups of some stored keys to the wrong leaf."""
    import lmdb

    keys = filled(tmp_path / "s", n=600)
    (tmp_path / "d").mkdir()
    with lmdb.open(str(tmp_path / "s"), readonly=True, lock=False, max_dbs=2) as env:
        env.copy(str(tmp_path / "d"), compact=True)
    data = bytearray((tmp_path / "d" / "data.mdb").read_bytes())
    page = lmdb_pages(tmp_path / "d", 1)[0] * PAGE
    lower = struct.unpack_from("<H", data, page + 12)[0]
    node = [page + struct.unpack_from("<H", data, page + 16 + 2 * j)[0] for j in range((lower - 16) // 2)]
    size = struct.unpack_from("<H", data, node[3] + 6)[0]
    data[node[3] + 8 : node[3] + 8 + size] = data[node[4] + 8 : node[4] + 8 + size]  # node 3 now starts at node 4's key
    (tmp_path / "d" / "data.mdb").write_bytes(bytes(data))
    with ActivationStore.open(tmp_path / "d", fp()) as st:
        assert st.kv.has_many(keys).count(False) >= 1  # the lookups that miss
        with pytest.raises(StoreCorruptError, match=r"entries that its recorded splits list as stored cannot be found"):
            st.missing(keys)
        assert len(st) == 600  # nothing was written a second time
        report = st.verify()
    assert not report.ok and any("a lookup does not find it" in p for p in report.problems), report.problems


@pytest.mark.parametrize("name", ["fingerprint", "label_names", "splits"])
def test_the_stores_own_records_carry_checksums_too(tmp_path, name):
    """A damaged label name would have renamed a class silently; a damaged split list was a raw JSONDecodeError."""
    with ActivationStore.open(tmp_path / "s", fp()) as st:
        st.merge_label_names(["neg", "pos"])
        st.add_split("train", Split({"states": [b"k" * 16]}))
        raw = st.kv.get_meta(name)
        st.kv.set_meta(name, raw.replace("n", "m", 1) if name != "fingerprint" else raw.replace("w1", "w2"))
    damaged = rf"key {f'meta:{name}'.encode().hex()}\) in the store at .* is damaged: its checksum does not match its text"
    with pytest.raises(StoreCorruptError, match=damaged), ActivationStore.open(tmp_path / "s", None, readonly=True) as st:
        st.label_names, st.split_names()  # noqa: B018


def test_leveldb_stores_verify_in_this_process(tmp_path):
    keys = filled(tmp_path / "s", n=40, backend="leveldb")
    with ActivationStore.open(tmp_path / "s", fp(), backend="leveldb") as st:
        assert st.verify().ok
        st.kv.put_many([(keys[3], st.kv.get_many([keys[4]])[0])])
        report = st.verify()
    assert report.problems == [f"entry {keys[3].hex()}: its checksum does not match its {report_size(tmp_path, keys[4])} bytes"]


def report_size(tmp_path, key) -> int:
    with ActivationStore.open(tmp_path / "s", None, backend="leveldb", readonly=True) as st:
        return len(st.kv.get_many([key])[0]) - 8
