import subprocess
import sys


def test_import_ember_is_light():
    code = "import sys, ember; print(sorted(m for m in ('torch', 'transformers', 'onnxruntime', 'openvino') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_lazy_exports_resolve():
    import ember

    assert ember.Recycler.__name__ == "Recycler"
    assert set(ember.__all__) >= {"Recycler", "RecycleConfig", "ActivationStore", "load_examples", "Tolerance"}


def test_all_matches_exports():
    import ember

    assert sorted(ember.__all__) == sorted(ember._EXPORTS)
