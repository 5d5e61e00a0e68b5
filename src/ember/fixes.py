"""The ways out that ember's messages name, as data (:class:`~ember.errors.Fix`): each once, here.

A message is built with the fix inside it (``f"...; {ALLOW_EMPTY}"``) and raised with ``fixes=[ALLOW_EMPTY]``;
the command line keeps a table from these objects to its own flags (``ember.cli.common``) and renders an error
with :meth:`~ember.errors.EmberError.render`, so no command searches message text for phrases. A fix's text is
what a Python user reads; its ``name`` says what it is about.

Example:
    >>> from ember.errors import DataError
    >>> err = DataError(f"example 3 has an empty text; {ALLOW_EMPTY}", fixes=[ALLOW_EMPTY])
    >>> err.render({ALLOW_EMPTY: "pass --allow-empty"})
    'example 3 has an empty text; pass --allow-empty'
"""

from __future__ import annotations

from ember.errors import Fix

# ember.data: reading a dataset
ALLOW_EMPTY = Fix("pass allow_empty=True", name="allow_empty")
SPLIT_TYPE = Fix("split must be a split name (a non-empty str, or None for 'train')", name="split")
SPLIT_NAME = Fix("Pass split='NAME'", name="split")
SPLIT_EMPTY = Fix("check the file and the split= argument", name="split")
TEXT_COLUMN = Fix("Pass the right name: text_column='NAME'", name="text_column")
LABEL_COLUMN = Fix("Pass the right name: label_column='NAME'", name="label_column")

# ember.models: loading a model and its tokenizer
MAX_LENGTH = Fix("max_length=", name="max_length")  # "max_length=600 exceeds ...": the argument, then its value
PACKAGED_MODEL = Fix("load a local folder or a hub id instead: load_model(path)", name="model")
PAD_TOKEN_GIVE = Fix("Give it one first: ", name="pad_token")
PAD_TOKEN_PASS = Fix(", or pass a tokenizer that has a pad token", name="tokenizer")

# ember.store: writing and opening a store
FREE_DISK = Fix("free disk space (or raise max_size)", name="max_size")
READ_COMMITTED = Fix("open the store read-only to read what is committed", name="readonly")
WRITABLE_LOCATION = Fix("Pass a writable location, or open the existing store with readonly=True to train or infer "
                        "from it", name="writable-store")
WRITABLE_COPY = Fix("but its folder cannot be written; pass a writable location", name="writable-store")

# ember.encoders: the cache's settings
MEMORY_BACKEND = Fix("use backend='lmdb' (or 'leveldb') to keep the cache there, or save_dir=None for an in-memory "
                     "cache", name="backend")
