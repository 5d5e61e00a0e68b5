"""Checks on an LMDB data file made before LMDB maps it.

LMDB maps ``data.mdb`` into memory and trusts its meta pages: a file cut short (a copy that stopped half way, a
full disk during ``cp``) is mapped past its end, and the first read of a missing page kills the process with
SIGBUS instead of raising. Reading the two meta pages ourselves and comparing the file's size with the last page
the newest one records turns that into an error.

Layout (LMDB 0.9, ``mdb.c``): page 0 and page 1 each hold a 16-byte page header then ``MDB_meta``: magic
(u32), version (u32), address (ptr), map size (size_t), two ``MDB_db`` records of 48 bytes (the first one's
``md_pad`` holds the page size), the last page number used (``mm_last_pg``) and the transaction id
(``mm_txnid``). The meta page with the larger transaction id is the current one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ember.errors import StoreCorruptError

MAGIC = 0xBEEFC0DE
_PAGE_HEADER = 16
_META = struct.Struct("<IIQQ")  # magic, version, address, map size
_DB = struct.Struct("<IHHQQQQQ")  # md_pad (page size in the free-pages db), flags, depth, 3 page counts, entries, root
_TAIL = struct.Struct("<QQ")  # mm_last_pg, mm_txnid
_META_BYTES = _META.size + 2 * _DB.size + _TAIL.size


@dataclass(frozen=True)
class MetaPage:
    """What one meta page says: the page size, the last page in use and its transaction id."""

    page_size: int
    last_page: int
    txnid: int

    @property
    def needed_bytes(self) -> int:
        """The least size of a data file whose pages this meta page refers to."""
        return (self.last_page + 1) * self.page_size


def read_meta(data: bytes) -> MetaPage | None:
    """The meta page at the start of ``data`` (page header included), or ``None`` when it is not one."""
    if len(data) < _PAGE_HEADER + _META_BYTES:
        return None
    magic, _version, _address, _mapsize = _META.unpack_from(data, _PAGE_HEADER)
    if magic != MAGIC:
        return None
    page_size = _DB.unpack_from(data, _PAGE_HEADER + _META.size)[0]
    last_page, txnid = _TAIL.unpack_from(data, _PAGE_HEADER + _META.size + 2 * _DB.size)
    if page_size < 512 or page_size & (page_size - 1):  # a power of two, as LMDB's pages are
        return None
    return MetaPage(page_size, last_page, txnid)


def check_data_file(store: Path, data: Path, refill: str) -> None:
    """Refuse an LMDB data file that is empty, is not LMDB's, or is shorter than its newest meta page says.

    Args:
        store: the store folder (for the message).
        data: its ``data.mdb``.
        refill: the fix, said at the end of each message.

    Raises:
        StoreCorruptError: naming the sizes and the fix.
    """
    size = data.stat().st_size
    if size == 0:
        raise StoreCorruptError(
            f"the store at {store} is empty: its data file {data.name} has 0 bytes (left by a fill that could not "
            f"start, on a full disk say, or a copy cut short). It holds nothing. {refill}"
        )
    with data.open("rb") as f:
        first = f.read(_PAGE_HEADER + _META_BYTES)
        meta0 = read_meta(first)
        if meta0 is None:
            raise StoreCorruptError(
                f"{store} is not a readable LMDB store (its data file does not start with an LMDB meta page). {refill}"
            )
        f.seek(meta0.page_size)
        meta1 = read_meta(f.read(_PAGE_HEADER + _META_BYTES))
    newest = meta0 if meta1 is None or meta0.txnid >= meta1.txnid else meta1
    if size < 2 * meta0.page_size or size < newest.needed_bytes:
        raise StoreCorruptError(
            f"the store at {store} is truncated: its data file has {size:,} bytes but its newest commit (transaction "
            f"{newest.txnid}) uses {newest.needed_bytes:,} ({newest.last_page + 1} pages of {newest.page_size} bytes); "
            f"a copy or a disk cut it short, and reading it would crash. {refill}"
        )
