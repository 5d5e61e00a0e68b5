"""One local Ray instance (2 CPUs) for the whole test session, and texts enough for several batches.

Imported by the test modules that need Ray (``from raytest import ray_cluster``); not a conftest, so that
``from conftest import ...`` keeps meaning tests/conftest.py.
"""

from __future__ import annotations

import random

import pytest

from conftest import WORDS


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with 2 CPUs, started once (a second module's copy of this fixture joins the running one)."""
    ray = pytest.importorskip("ray")
    from ember.scale import RayConfig, connect

    cluster = connect(RayConfig.local(cpus=2))
    yield cluster
    ray.shutdown()


def sentences(n: int = 300, seed: int = 0) -> list[str]:
    """``n`` distinct texts of 1 to 20 words from the tiny vocabulary (mixed lengths: several padded batches)."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out[" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20)))] = None
    return list(out)


def same_store(a, b) -> None:
    """Two stores hold the same keys with byte-identical values, the same fingerprint and the same splits."""
    ka, kb = sorted(a.kv.keys()), sorted(b.kv.keys())
    assert ka == kb and ka
    assert a.kv.get_many(ka) == b.kv.get_many(kb)
    assert a.fingerprint == b.fingerprint
    assert a.split_names() == b.split_names()
    for name in a.split_names():
        assert a.find_split(name) == b.find_split(name)
