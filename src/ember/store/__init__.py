"""The one store: content keys, a fingerprint, a no-pickle codec and interchangeable backends."""

from ember.store.activations import ActivationStore, Entry, Split
from ember.store.base import Backend, KVStore, open_kv
from ember.store.fingerprint import Fingerprint, tokenizer_hash, weights_hash
from ember.store.keys import content_key, row_keys

__all__ = [
    "ActivationStore",
    "Entry",
    "Split",
    "Backend",
    "KVStore",
    "open_kv",
    "Fingerprint",
    "tokenizer_hash",
    "weights_hash",
    "content_key",
    "row_keys",
]
