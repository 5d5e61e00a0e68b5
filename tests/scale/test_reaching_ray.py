"""Reaching Ray: a clear error when it is not installed, a bounded wait for an address that does not answer,
configs refused with the fix. None of these start Ray."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import torch

from ember.scale import (
    RayConfig,
    RayConfigError,
    RayConnectionError,
    RayNotInstalledError,
    WorkerEnvironmentError,
)
from ember.scale.cluster import import_ray, probe, resolve_address
from ember.scale.transport import check_environment, environment, pack, ship, unpack


def test_without_ray_installed_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(RayNotInstalledError) as err:
        import_ray()
    assert 'pip install "ember[ray]"' in str(err.value) and "on every node of the cluster" in str(err.value)
    from ember.scale import RayExecutor

    with pytest.raises(RayNotInstalledError):
        RayExecutor(RayConfig.local()).start()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free again once closed: nothing listens there


@pytest.mark.parametrize("client", [False, True])
def test_an_address_where_nothing_listens_fails_at_once_naming_the_ports(client):
    address = f"{'ray://' if client else ''}127.0.0.1:{_closed_port()}"
    start = time.perf_counter()
    with pytest.raises(RayConnectionError) as err:
        probe(address, 5.0)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert f"no Ray cluster answered at {address} within 5s" in message
    assert "Start one there with `ray start --head`" in message
    assert ("Ray Client port" if client else "GCS port") in message


def test_an_address_that_does_not_answer_gives_up_after_the_timeout():
    # TEST-NET-1 (RFC 5737) is never routed: the connection attempt hangs until the timeout (or fails at once
    # where the sandbox has no route at all); ray.init itself retried such an address for minutes
    start = time.perf_counter()
    with pytest.raises(RayConnectionError, match=r"no Ray cluster answered at 192\.0\.2\.1:6379 within 0\.5s"):
        probe("192.0.2.1:6379", 0.5)
    assert time.perf_counter() - start < 3


def test_addresses_resolve_as_ray_init_resolves_them(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == "local" and resolve_address("local") == "local"
    assert resolve_address("ray://head:10001") == "ray://head:10001"
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert resolve_address(None) == "head:6379" and resolve_address("auto") == "head:6379"
    assert resolve_address("local") == "local"  # 'local' always starts one here


def test_configs_are_refused_with_the_fix():
    with pytest.raises(RayConfigError, match="Ray address 'head' is not one ember understands: pass 'local'"):
        RayConfig(address="head")
    with pytest.raises(RayConfigError, match="workers must be an int >= 1, got 0"):
        RayConfig(workers=0)
    with pytest.raises(RayConfigError, match="connect_timeout_s must be a positive number of seconds, got -1"):
        RayConfig(connect_timeout_s=-1)
    with pytest.raises(RayConfigError, match="threads must be an int >= 1 or None"):
        RayConfig(threads=0)
    assert RayConfig.cluster("10.0.0.5:6379", workers=4).to_dict()["address"] == "10.0.0.5:6379"
    assert RayConfig(address="ray://[::1]:10001").address == "ray://[::1]:10001"
    with pytest.raises(TypeError, match="config must be a RayConfig"):
        from ember.scale import RayExecutor

        RayExecutor({"workers": 2})


def test_entries_travel_bit_for_bit():
    entry = {"states": torch.randn(5, 8).to(torch.bfloat16), "content": torch.arange(16, dtype=torch.uint8)}
    back = unpack(pack(entry))
    assert back.keys() == entry.keys() and all(torch.equal(back[k], entry[k]) and back[k].dtype == entry[k].dtype for k in entry)
    view = torch.randn(4, 6)[1:3, ::2]  # not contiguous: packed as its values
    assert torch.equal(unpack(pack({"x": view}))["x"], view)


def test_a_model_asked_for_hidden_states_travels_to_a_fresh_worker_and_gives_them_there(tmp_path):
    pytest.importorskip("ray")
    import pickle

    from conftest import make_model

    model = make_model("bert").eval()
    ids = torch.tensor([[2, 7, 9, 3], [2, 8, 3, 0]])  # (B, T)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=(ids != 0).long(), output_hidden_states=True)
    with pytest.raises(Exception, match="output_capturing_hook|ContextVar"):
        pickle.dumps(model)  # transformers' capture hooks: why ship() leaves them out
    (tmp_path / "producer").write_bytes(ship({"model": model}))
    torch.save(ids, tmp_path / "ids.pt")
    # a fresh process, as a Ray worker is: no instance of the class was ever built there (transformers registers
    # what a model class records only in __init__: a plain unpickled copy returned hidden_states=None)
    script = (
        "import sys, torch; from ember.scale.transport import unship; p = sys.argv[1]\n"
        "m = unship(open(p + '/producer', 'rb').read())['model']; ids = torch.load(p + '/ids.pt')\n"
        "with torch.no_grad(): o = m(input_ids=ids, attention_mask=(ids != 0).long(), output_hidden_states=True)\n"
        "torch.save({'logits': o.logits, 'hidden': o.hidden_states}, p + '/out.pt')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, capture_output=True, timeout=300)
    got = torch.load(tmp_path / "out.pt")
    assert torch.equal(got["logits"], want.logits) and got["hidden"] is not None
    assert len(got["hidden"]) == len(want.hidden_states)
    assert all(torch.equal(a, b) for a, b in zip(got["hidden"], want.hidden_states, strict=True))
    # this process's model is left as it was (the flag is on the PreTrainedModel inside that installed the hooks)
    assert any(getattr(m, "_output_capturing_hooks_installed", False) for m in model.modules())


def test_a_worker_with_other_libraries_is_refused_naming_them():
    here = environment()
    check_environment(dict(here, host="node-7"), here)  # another host alone is fine
    with pytest.raises(WorkerEnvironmentError) as err:
        check_environment(dict(here, host="node-7", cpu="AVX2", transformers="4.0.0"), dict(here, cpu="AVX512"))
    message = str(err.value)
    assert "the Ray worker on node-7 runs transformers '4.0.0'" in message and "cpu 'AVX2' (this process: 'AVX512')" in message
    assert "Give every node the driver's versions" in message


@pytest.mark.slow
def test_a_port_that_answers_but_is_not_ray_is_given_up_on(tmp_path):
    """The handshake is bounded too (ray.init waited minutes on it); run in a child process, as the CLI would."""
    pytest.importorskip("ray")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    code = ("from ember.scale import RayConfig, RayExecutor\n"
            f"RayExecutor(RayConfig(address='127.0.0.1:{port}', connect_timeout_s=3)).start()\n")
    start = time.perf_counter()
    try:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        server.close()
    assert run.returncode != 0 and time.perf_counter() - start < 90
    assert "did not complete Ray's handshake" in run.stderr


def test_importing_ember_scale_does_not_import_ray():
    code = "import sys, ember.scale, ember.scale.errors, ember.cli; print('ray' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False False"  # the command line starts without torch, as before


def test_the_public_names_of_ember_scale_resolve():
    import ember.scale

    assert sorted(ember.scale.__all__) == sorted(ember.scale._EXPORTS)
    assert all(getattr(ember.scale, n) is not None for n in ember.scale.__all__)
