from __future__ import annotations

import errno
import subprocess
import sys
import textwrap

import pytest
import torch

from ember.errors import (
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreMismatchError,
    StoreReadOnlyError,
)
from ember.store import ActivationStore, Fingerprint, Split, content_key, open_kv
from ember.store.codec import decode, encode

BACKENDS = ["lmdb", "leveldb", "memory"]


def fp(**kw) -> Fingerprint:
    base = dict(kind="recycle", architecture="BertModel/bert", weights="w1", layer=3, dtype="float32", tokenizer="t1", max_length=128)
    return Fingerprint(**{**base, **kw})


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_contract(tmp_path, backend):
    kv = open_kv(tmp_path / "s", backend)
    kv.put_many([(b"a", b"1"), (b"b", b"22")])
    assert kv.get_many([b"a", b"x", b"b"]) == [b"1", None, b"22"]
    assert kv.has_many([b"a", b"x"]) == [True, False]
    assert sorted(kv.keys()) == [b"a", b"b"]
    assert len(kv) == 2
    kv.set_meta("fingerprint", "{}")
    assert kv.get_meta("fingerprint") == "{}" and kv.get_meta("nope") is None
    assert b"fingerprint" not in set(kv.keys())  # metadata never mixes with entries
    kv.close()


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_persistence_and_readonly_reopen(tmp_path, backend):
    st = ActivationStore.open(tmp_path / "s", fp(), backend=backend)
    st.put([b"k1"], [{"states": torch.arange(6.0).view(2, 3)}])
    st.close()
    ro = ActivationStore.open(tmp_path / "s", fp(), backend=backend, readonly=True)
    assert torch.equal(ro.get([b"k1"])[0]["states"], torch.arange(6.0).view(2, 3))
    with pytest.raises(StoreReadOnlyError, match="read-only"):
        ro.put([b"k2"], [{"states": torch.zeros(1, 3)}])
    ro.close()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_codec_roundtrip_is_exact(dtype):
    t = torch.randn(7, 5).to(dtype)
    out = decode(encode({"states": t, "label": torch.tensor(3)}))
    assert out["states"].dtype == dtype and torch.equal(out["states"], t)
    assert int(out["label"]) == 3
    assert b"pickle" not in encode({"x": t})  # plain safetensors, no pickle opcode stream


def test_half_precision_halves_entry_size():
    t = torch.randn(12, 384)
    assert len(encode({"states": t.half()})) < 0.51 * len(encode({"states": t}))


def test_corrupt_entry_names_key():
    with pytest.raises(StoreCorruptError, match=r"key 6b6579.*damaged"):
        decode(b"\x05\x00garbage", b"key")


def test_content_key_ignores_container_and_index():
    assert content_key([1, 2, 3]) == content_key(torch.tensor([1, 2, 3], dtype=torch.int64))
    assert content_key([1, 2, 3]) != content_key([1, 2, 4])
    assert len(content_key([1])) == 16


def test_fingerprint_mismatch_names_every_difference(tmp_path):
    ActivationStore.open(tmp_path / "s", fp()).close()
    with pytest.raises(StoreMismatchError) as e:
        ActivationStore.open(tmp_path / "s", fp(weights="w2", layer=2))
    msg = str(e.value)
    assert "weights: store has 'w1', this run has 'w2'" in msg
    assert "layer: store has 3, this run has 2" in msg
    assert "dtype" not in msg and "Rebuild it" in msg
    assert e.value.differences == ["weights: store has 'w1', this run has 'w2'", "layer: store has 3, this run has 2"]


def test_corrupt_lmdb_file(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "data.mdb").write_bytes(b"this is not an lmdb file" * 500)
    with pytest.raises(StoreCorruptError, match="not a readable LMDB store"):
        ActivationStore.open(d, fp())


def test_lmdb_with_damaged_pages_past_the_header_says_to_refill(tmp_path):
    """Pages past LMDB's header overwritten (not just the header): the same StoreCorruptError and advice."""
    import random

    with ActivationStore.open(tmp_path / "s", fp()) as store:
        store.put([content_key([i]) for i in range(50)], [{"states": torch.randn(4, 8)} for _ in range(50)])
    data = tmp_path / "s" / "data.mdb"
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.seek(8192)  # the two meta pages stay intact
        f.write(random.Random(0).randbytes(size - 8192))
    with pytest.raises(StoreCorruptError, match=r"not a readable LMDB store .* Delete it and fill it again"):
        ActivationStore.open(tmp_path / "s", fp())


def test_missing_store_readonly(tmp_path):
    with pytest.raises(StoreError, match="has not been filled yet"):
        ActivationStore.open(tmp_path / "none", fp(), readonly=True)


def test_second_writer_gets_clear_error_while_readers_work(tmp_path):
    path = tmp_path / "s"
    st = ActivationStore.open(path, fp())
    st.put([b"k"], [{"states": torch.ones(1, 2)}])
    code = textwrap.dedent(
        f"""
        import sys
        from ember.errors import StoreLockedError
        from ember.store import ActivationStore
        try:
            ActivationStore.open({str(path)!r}, None)
        except StoreLockedError as e:
            print("LOCKED", e); sys.exit(0)
        sys.exit(1)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "being written by another process" in r.stdout
    read = subprocess.run(
        [sys.executable, "-c", f"from ember.store import ActivationStore; print(len(ActivationStore.open({str(path)!r}, None, readonly=True)))"],
        capture_output=True, text=True, timeout=120,
    )
    assert read.stdout.strip() == "1", read.stderr
    st.close()
    ActivationStore.open(path, None).close()  # lock released on close


def test_leveldb_second_process_locked(tmp_path):
    st = ActivationStore.open(tmp_path / "l", fp(), backend="leveldb")
    with pytest.raises(StoreLockedError, match=r"open in another process \(IO error: lock .*LOCK: already held by process\)\. "):
        ActivationStore.open(tmp_path / "l", fp(), backend="leveldb")  # plyvel's reason decoded, not b'IO error: ...'
    st.close()


def test_readonly_location(tmp_path, monkeypatch):
    import pathlib

    def refuse(self, data):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(pathlib.Path, "write_bytes", refuse)
    with pytest.raises(StoreReadOnlyError, match=r"cannot write the store .* Read-only file system\. Pass a writable location"):
        ActivationStore.open(tmp_path / "ro", fp())


def test_size_limit_is_a_clear_full_error_and_keeps_commits(tmp_path):
    st = ActivationStore.open(tmp_path / "s", fp(), max_size=1 << 20)
    big = torch.zeros(64, 384)  # ~98 KB per entry
    written = 0
    with pytest.raises(StoreFullError, match=r"is full .* entries committed before stay valid"):
        for i in range(100):
            st.put([bytes([i])], [{"states": big}])
            written += 1
    assert 0 < written < 100
    assert len(st) == written
    assert all(e is not None for e in st.get([bytes([i]) for i in range(written)]))
    st.close()


class _Usage:
    """What ``shutil.disk_usage`` returns, with ``free`` bytes free."""

    def __init__(self, free: int) -> None:
        self.total, self.used, self.free = 1 << 30, (1 << 30) - free, free


class _LMDBCommitFails:
    """An LMDB environment whose next write transaction fails with ``error`` (as a commit on a full tmpfs does)."""

    def __init__(self, env, error: Exception) -> None:
        self.env, self.error = env, error

    def begin(self, *a, **kw):
        if kw.get("write"):
            raise self.error
        return self.env.begin(*a, **kw)

    def __getattr__(self, name):
        return getattr(self.env, name)


def _eio_lmdb() -> Exception:
    import lmdb

    return lmdb.Error("mdb_txn_commit: Input/output error")  # what lmdb raises when a commit fills a tmpfs


def test_lmdb_io_error_on_a_full_disk_is_a_store_full_error(tmp_path, monkeypatch):
    import shutil

    kv = open_kv(tmp_path / "s")
    kv.put_many([(b"a", b"1"), (b"b", b"2")])
    kv.env = _LMDBCommitFails(kv.env, _eio_lmdb())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(free=4096))
    with pytest.raises(StoreFullError) as err:
        kv.put_many([(b"c", b"3")])
    msg = str(err.value)
    assert "the disk holding the store at" in msg and "is full (0.0 MiB free;" in msg
    assert "Input/output error" in msg and "The 2 entries committed before stay valid" in msg
    assert "free disk space, or point the store at a folder on another disk, and rerun" in msg
    kv.env = kv.env.env
    assert kv.get_many([b"a", b"b", b"c"]) == [b"1", b"2", None]  # what was committed is kept
    kv.close()


def test_lmdb_io_error_with_free_space_is_not_called_a_full_disk(tmp_path, monkeypatch):
    import shutil

    kv = open_kv(tmp_path / "s")
    kv.env = _LMDBCommitFails(kv.env, _eio_lmdb())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(free=50 << 30))
    with pytest.raises(StoreError, match=r"writing the store at .* failed: mdb_txn_commit: Input/output error") as err:
        kv.put_many([(b"c", b"3")])
    assert not isinstance(err.value, StoreFullError)
    kv.env = kv.env.env
    kv.close()


def test_lmdb_io_error_on_a_write_larger_than_the_free_space_is_a_full_disk(tmp_path, monkeypatch):
    import shutil

    kv = open_kv(tmp_path / "s")
    kv.env = _LMDBCommitFails(kv.env, _eio_lmdb())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(free=3 << 20))  # 3 MiB free, 4 MiB written
    with pytest.raises(StoreFullError, match=r"is full \(3\.0 MiB free; the write failed with mdb_txn_commit"):
        kv.put_many([(b"big", bytes(4 << 20))])
    kv.env = kv.env.env
    kv.close()


def test_lmdb_store_created_on_a_full_disk_is_a_store_full_error(tmp_path, monkeypatch):
    """Was a SIGBUS that killed the process (LMDB maps its new lock file on a full tmpfs), or a generic 'cannot open'
    StoreError: nothing is created, and the message gives the space left."""
    import shutil

    kept = open_kv(tmp_path / "kept")  # a store from before the disk filled up
    kept.put_many([(b"a", b"1")])
    kept.close()
    (tmp_path / "no-lock").mkdir()
    shutil.copy(tmp_path / "kept" / "data.mdb", tmp_path / "no-lock" / "data.mdb")  # copied without its lock.mdb
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(free=200 << 10))
    full = (r"^cannot open the store at .*: the disk holding it is full \(0\.2 MiB free\), and creating a store \(or the "
            r"lock file LMDB keeps beside one\) writes to it\. Free disk space, or point the store at a folder on "
            r"another disk, and rerun; a store already there keeps every entry committed\.$")
    for path, readonly in ((tmp_path / "new", False), (tmp_path / "a" / "b", False), (tmp_path / "no-lock", False),
                           (tmp_path / "no-lock", True)):
        with pytest.raises(StoreFullError, match=full):
            open_kv(path, readonly=readonly)
    with pytest.raises(StoreFullError, match=full):
        ActivationStore.open(tmp_path / "new2", fp())
    assert not (tmp_path / "new" / "data.mdb").exists() and not (tmp_path / "new" / "writer.lock").exists()
    assert sorted(p.name for p in (tmp_path / "no-lock").iterdir()) == ["data.mdb"]
    for readonly in (False, True):  # an existing store opens: reading needs no space, a write says the disk is full
        kv = open_kv(tmp_path / "kept", readonly=readonly)
        assert kv.get_many([b"a"]) == [b"1"]
        kv.close()


def test_lmdb_open_failing_on_a_full_disk_is_a_store_full_error(tmp_path, monkeypatch):
    import shutil

    import lmdb

    def full(path, **kw):
        (tmp_path / "s" / "data.mdb").write_bytes(b"")  # what LMDB leaves when writing the first pages fails
        raise lmdb.DiskError(f"{path}: No space left on device")

    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(free=3 << 20))  # above the margin: LMDB itself fails
    monkeypatch.setattr(lmdb, "open", full)
    with pytest.raises(StoreFullError, match=r"^cannot open the store at .*: the disk holding it is full \(3\.0 MiB free; "
                       r".*: No space left on device\)"):
        open_kv(tmp_path / "s")
    assert not (tmp_path / "s" / "data.mdb").exists()  # an empty data file would pass for a store next time
    monkeypatch.setattr(lmdb, "open", lambda path, **kw: (_ for _ in ()).throw(lmdb.Error("mdb_env_open: Bad file")))
    with pytest.raises(StoreError, match="cannot open the LMDB store at .*: mdb_env_open: Bad file") as err:
        open_kv(tmp_path / "s")
    assert not isinstance(err.value, StoreFullError)


def test_lmdb_writer_lock_on_a_full_disk_is_a_store_full_error(tmp_path, monkeypatch):
    """Writing the pid into the lock file fails on a full disk: a StoreFullError, and the lock is given back."""
    import builtins

    import ember.store.lmdb as lm

    open_kv(tmp_path / "s").close()

    class NoRoom:
        def __init__(self, f) -> None:
            self.f = f

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(lm, "open", lambda *a, **kw: NoRoom(builtins.open(*a, **kw)), raising=False)  # noqa: SIM115
    with pytest.raises(StoreFullError, match=r"cannot open the store at .*: the disk holding it is full \(.*No space left"):
        open_kv(tmp_path / "s")
    monkeypatch.undo()
    open_kv(tmp_path / "s").close()  # the lock was given back


class _LevelDBWriteFails:
    """A plyvel database whose writes fail with ``error``; reads go to the real one."""

    def __init__(self, db, error: Exception) -> None:
        self.db, self.error = db, error

    def write_batch(self, *a, **kw):
        raise self.error

    def put(self, *a, **kw):
        raise self.error

    def __getattr__(self, name):
        return getattr(self.db, name)


@pytest.mark.parametrize(
    "reason, free",
    [(b"IO error: /s/000003.log: No space left on device", 50 << 30), (b"IO error: /s/000003.log: Input/output error", 0)],
)
def test_leveldb_full_disk_is_a_store_full_error(tmp_path, monkeypatch, reason, free):
    import shutil

    import plyvel

    kv = open_kv(tmp_path / "s", "leveldb")
    kv.put_many([(b"a", b"1")])
    kv.db = _LevelDBWriteFails(kv.db, plyvel.IOError(reason))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(free=free))
    for write in (lambda: kv.put_many([(b"b", b"2")]), lambda: kv.set_meta("name", "value")):
        with pytest.raises(StoreFullError, match=r"the disk holding the store at .* is full .*The 1 entries committed "
                           r"before stay valid.*point the store at a folder on another disk") as err:
            write()
        assert f"the write failed with {reason.decode()}). The 1 entries" in str(err.value)  # not b'IO error: ...'
    kv.db = kv.db.db
    assert kv.get_many([b"a", b"b"]) == [b"1", None]
    kv.close()


def test_leveldb_other_write_errors_are_store_errors(tmp_path, monkeypatch):
    import shutil

    import plyvel

    kv = open_kv(tmp_path / "s", "leveldb")
    kv.db = _LevelDBWriteFails(kv.db, plyvel.IOError(b"IO error: /s/000003.log: Input/output error"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(free=50 << 30))
    with pytest.raises(StoreError, match=r"writing the LevelDB store at .* failed: IO error: /s/000003\.log: "
                       r"Input/output error$") as err:
        kv.put_many([(b"b", b"2")])
    assert not isinstance(err.value, StoreFullError)
    kv.db = kv.db.db
    kv.close()


def test_leveldb_open_on_a_full_disk_is_a_store_full_error(tmp_path, monkeypatch):
    import plyvel

    open_kv(tmp_path / "s", "leveldb").close()

    def full(*a, **kw):
        raise plyvel.IOError(b"IO error: /s/000005.ldb: No space left on device")

    monkeypatch.setattr(plyvel, "DB", full)
    with pytest.raises(StoreFullError, match=r"cannot open the LevelDB store at .*: the disk holding it is full \(.*; IO "
                       r"error: /s/000005\.ldb: No space left on device\), and LevelDB writes when it opens a store, "
                       r"even to read it\. Free disk space"):
        open_kv(tmp_path / "s", "leveldb", readonly=True)


@pytest.mark.parametrize(
    "error, kind, message",
    [
        ("CorruptionError", StoreCorruptError, r"the LevelDB store at .* is corrupt \(Corruption: bad block\); delete it"),
        ("IOError", StoreReadOnlyError, r"cannot open the LevelDB store at .*: IO error: /s/LOG: Permission denied$"),
        ("Error", StoreError, r"cannot open the LevelDB store at .*: Invalid argument: /s: exists \(error_if_exists "
                              r"is true\)$"),  # was a raw plyvel.Error
    ],
)
def test_leveldb_open_errors_read_as_text(tmp_path, monkeypatch, error, kind, message):
    """plyvel's reasons are bytes: ember's messages show them as text, not as b'...'."""
    import plyvel

    open_kv(tmp_path / "s", "leveldb").close()
    reason = {"CorruptionError": b"Corruption: bad block", "IOError": b"IO error: /s/LOG: Permission denied",
              "Error": b"Invalid argument: /s: exists (error_if_exists is true)"}[error]

    def refuse(*a, **kw):
        raise getattr(plyvel, error)(reason)

    monkeypatch.setattr(plyvel, "DB", refuse)
    with pytest.raises(kind, match=message) as err:
        open_kv(tmp_path / "s", "leveldb")
    assert "b'" not in str(err.value)


def test_store_with_entries_but_no_fingerprint_is_refused(tmp_path):
    kv = open_kv(tmp_path / "s")
    kv.put_many([(b"k", encode({"states": torch.zeros(1, 2)}))])
    kv.close()
    with pytest.raises(StoreMismatchError, match="holds entries but no fingerprint"):
        ActivationStore.open(tmp_path / "s", fp())


def test_reader_follows_writer_growing_the_map(tmp_path, monkeypatch):
    import ember.store.lmdb as lm

    monkeypatch.setattr(lm, "_INITIAL_MAP", 1 << 20)
    writer = ActivationStore.open(tmp_path / "s", fp())
    writer.put([b"first"], [{"states": torch.zeros(4, 4)}])
    code = textwrap.dedent(
        f"""
        import sys, time
        import ember.store.lmdb as lm
        lm._INITIAL_MAP = 1 << 20
        from ember.store import ActivationStore
        r = ActivationStore.open({str(tmp_path / 's')!r}, None, readonly=True)
        print(len(r), flush=True)
        sys.stdin.readline()          # the writer grows the map meanwhile
        print(len(r), r.get([bytes([7])])[0]["states"].shape[0], flush=True)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "1"
    for i in range(40):  # ~4 MB: several doublings past the reader's 1 MiB map
        writer.put([bytes([i])], [{"states": torch.zeros(256, 384)}])
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.stdout.readline().split() == ["41", "256"]
    p.wait(timeout=60)
    writer.close()


def test_lmdb_store_pickles_as_a_reader(tmp_path):
    import pickle

    st = ActivationStore.open(tmp_path / "s", fp())
    st.put([b"k"], [{"states": torch.ones(2, 2)}])
    (tmp_path / "kv.pkl").write_bytes(pickle.dumps(st.kv))  # what a spawn-started DataLoader worker receives
    code = f"import pickle; kv = pickle.loads(open({str(tmp_path / 'kv.pkl')!r}, 'rb').read()); print(kv.readonly, len(kv.get_many([b'k'])[0]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", str(len(st.kv.get_many([b"k"])[0]))], out.stderr
    st.close()


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_split_records_persist_with_every_column(tmp_path, backend):
    keys = [content_key([i, i + 1]) for i in range(5)]
    split = Split({"query": keys, "doc": keys[::-1]}, labels=[0, 2, 1, 0, 3], lengths=[2] * 5)
    with ActivationStore.open(tmp_path / "s", fp(), backend=backend) as st:
        st.add_split("train", split)
        st.add_split("dev", Split({"states": keys[:2]}))
        st.add_split("train", split)  # recording a split again replaces it; names stay unique
    with ActivationStore.open(tmp_path / "s", fp(), backend=backend, readonly=True) as st:
        assert st.split_names() == ["train", "dev"]
        assert st.get_split("train") == split and len(st.get_split("train")) == 5
        assert st.get_split("dev") == Split({"states": keys[:2]})
        assert st.find_split("test") is None


def test_split_columns_must_have_one_length():
    with pytest.raises(ValueError, match=r"one length each; got sizes \[2, 3\]"):
        Split({"states": [b"k" * 16] * 3}, labels=[0, 1])


def test_corrupt_split_record_names_it():
    st = ActivationStore.open(None, fp(), backend="memory")
    st.kv.set_meta("split:train", "Z2FyYmFnZQ==")  # base64 of b"garbage"
    with pytest.raises(StoreCorruptError, match=r"key 73706c69743a747261696e.*damaged"):
        st.get_split("train")


def test_unknown_backend_is_named_everywhere():
    from ember.encoders import CacheConfig
    from ember.encoders.errors import CacheConfigError
    from ember.recycle import RecycleConfig

    want = "backend 'redis' is not one of 'lmdb', 'leveldb', 'memory'"
    for make, error in ((lambda: open_kv(None, "redis"), ValueError), (lambda: RecycleConfig(layer=1, backend="redis"), ValueError),
                        (lambda: CacheConfig(backend="redis"), CacheConfigError)):
        with pytest.raises(error) as e:
            make()
        assert str(e.value) == want
