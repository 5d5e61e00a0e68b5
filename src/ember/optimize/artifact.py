"""The optimised model users get back, and its on-disk form.

An artifact is called like the original (``artifact(input_ids=..., attention_mask=...)``) and
returns the same ``ModelOutput`` type (``logits`` for classifiers, ``last_hidden_state`` for bare
encoders). A saved artifact is a directory::

    ember-artifact.json   format version, optimize config, fidelity report, file hashes, model facts
                          (including the original's Hugging Face config)
    tokenizer/            the tokenizer, so the directory serves on its own
    <backend files>       model.onnx / model.xml+bin / hf/ (torch backends)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.errors import ArtifactError, DataError, InputTooLongError
from ember.fidelity import FidelityReport, mean_pool
from ember.optimize.config import OptimizeConfig, config_from_dict
from ember.optimize.speed import SpeedReport

FORMAT_VERSION = 1
MANIFEST = "ember-artifact.json"
# the module class a SentenceTransformer saved by ember names in its modules.json (ember.optimize.sentence)
SENTENCE_MODULE = "ember.optimize.sentence.EmberTransformer"
OUTPUT_KINDS = ("logits", "last_hidden_state")


@dataclass(frozen=True)
class ModelFacts:
    """What an artifact needs to know about the model it came from."""

    model_type: str
    output: str  # "logits" | "last_hidden_state"
    input_names: tuple[str, ...]  # forward inputs, in order, e.g. ("input_ids", "attention_mask", "token_type_ids")
    max_length: int
    hf_config: dict[str, Any]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_names"] = list(self.input_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelFacts:
        return cls(d["model_type"], d["output"], tuple(d["input_names"]), int(d["max_length"]), d["hf_config"])

    def pretrained_config(self):
        """A fresh Hugging Face ``PretrainedConfig`` rebuilt from ``hf_config`` (the original's ``config.to_dict()``).

        The config class comes from transformers' registry of model types (``BertConfig`` for ``"bert"``); a
        model type transformers does not know gives a plain ``PretrainedConfig`` holding the same keys.

        Example:
            >>> facts.pretrained_config().id2label  # doctest: +SKIP
            {0: 'negative', 1: 'positive'}
        """
        from transformers import PretrainedConfig
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        model_type = self.hf_config.get("model_type", self.model_type)
        # (the lazy mapping's .get() skips its loader, so index it)
        cls = CONFIG_MAPPING[model_type] if model_type in CONFIG_MAPPING else PretrainedConfig  # noqa: SIM401
        return cls.from_dict(dict(self.hf_config))


def wrap_output(output: str, tensor: torch.Tensor):
    """The transformers ``ModelOutput`` the original model would have returned: ``SequenceClassifierOutput(logits=...)``
    for a classifier, ``BaseModelOutput(last_hidden_state=...)`` for a bare encoder.

    Why it is not built by calling the class: a ``ModelOutput``'s dataclass ``__init__`` and ``__post_init__``
    (field checks, a ``fields()`` call per attribute set) cost 7.7 µs a call, measured, against 0.5 µs for
    filling the same ``OrderedDict`` directly: 1% of a ~0.7 ms int8 MiniLM-L6 call at batch 1, where ember's whole
    wrapper around the engine's request costs ~22 µs. The object is the same: one key, the tensor also as its
    attribute, every other field left at its ``None`` default. ``tests/optimize/test_artifact_output.py`` compares it with the constructor's on what callers use (attributes,
    keys, indexing, ``to_tuple``, pickling), so a transformers release that changes ``ModelOutput`` fails there.

    Example:
        >>> wrap_output("last_hidden_state", torch.zeros(1, 3, 4)).last_hidden_state.shape
        torch.Size([1, 3, 4])
    """
    cls, field = _classifier_output() if output == "logits" else _base_output()
    if not issubclass(cls, OrderedDict):  # a transformers that changed ModelOutput's base: the slow, safe way
        return cls(**{field: tensor})
    out = OrderedDict.__new__(cls)
    OrderedDict.__setitem__(out, field, tensor)
    object.__setattr__(out, field, tensor)
    return out


@functools.cache
def _base_output() -> tuple[type, str]:
    from transformers.modeling_outputs import BaseModelOutput

    return BaseModelOutput, "last_hidden_state"


@functools.cache
def _classifier_output() -> tuple[type, str]:
    from transformers.modeling_outputs import SequenceClassifierOutput

    return SequenceClassifierOutput, "logits"


class OptimizedModel(nn.Module):
    """Base of every artifact: same call interface as the original model, plus what was measured.

    Like Optimum's ``ORTModel``, an artifact carries the original model's Hugging Face config as
    ``.config``, so code that reads ``model.config.id2label`` and ``transformers.pipeline`` work on it;
    the ember config that built it is ``.optimize_config``.

    In ``transformers.pipeline`` (checked with transformers 5.23), every backend works, also after
    ``ember.optimize.load(dir)`` without the original model:

    - ``pipeline("text-classification", model=art, tokenizer=art.tokenizer)`` on a classifier artifact
      (labels from ``config.id2label``, softmax/sigmoid chosen from ``config.problem_type``/``num_labels``);
    - ``pipeline("feature-extraction", model=art, tokenizer=art.tokenizer)`` on a bare-encoder artifact
      (returns ``last_hidden_state``).

    What the pipeline reads besides ``config`` is here too: ``device``, ``dtype`` (of the outputs,
    always float32), ``can_generate()`` (``False``) and ``input_modalities``. ONNX Runtime and OpenVINO
    artifacts run on the CPU whatever ``device=`` the pipeline is given (``.to()`` leaves them there);
    inputs are moved to the CPU and outputs come back on it. A classifier artifact's class is listed in
    transformers' ``AutoModelForSequenceClassification`` mapping (as Optimum does for its models), only so
    that the pipeline does not log that the class is unsupported; nothing else is registered.

    Attributes:
        config: the original model's Hugging Face ``PretrainedConfig`` (rebuilt from the saved manifest on load).
        optimize_config: the ember config that built it (e.g. ``OnnxRuntimeConfig(...)``).
        fidelity: ``FidelityReport`` against the original on padded mixed-length batches.
        speed: ``SpeedReport``: the artifact timed against the original when it was built (batch 1 and a batch,
            medians of interleaved rounds, with the CPU they were measured on); ``None`` if it was not timed.
        size_bytes: bytes of the artifact's weights/graph.
        build_seconds: wall time of ``optimize`` (build + verification).
        build_notes: what the build measured to choose settings itself, one line each with its figures (e.g.
            ``batch models x1.08 the dynamic model on 4 sample batches of 32 (3 rounds): kept``); saved with it.
        facts: model type, output kind, input names, max length.
        tokenizer: the tokenizer it was built with (saved alongside).

    Example:
        >>> from transformers import pipeline  # doctest: +SKIP
        >>> clf = pipeline("text-classification", model=art, tokenizer=art.tokenizer)  # doctest: +SKIP
        >>> clf("book a flight to paris")  # doctest: +SKIP
        [{'label': 'book_flight', 'score': 0.97}]
    """

    backend_files: tuple[str, ...] = ()
    input_modalities = "text"  # read by transformers' Pipeline.__repr__
    main_input_name = "input_ids"

    def __init__(self, optimize_config: OptimizeConfig, facts: ModelFacts, tokenizer=None) -> None:
        super().__init__()
        self.optimize_config = optimize_config
        self.facts = facts
        self.config = facts.pretrained_config()
        self.tokenizer = tokenizer
        self.fidelity: FidelityReport | None = None
        self.speed: SpeedReport | None = None
        self.size_bytes: int = 0
        self.build_seconds: float = 0.0
        self.build_notes: list[str] = []
        if facts.output == "logits":
            _list_as_sequence_classifier(type(self))

    @property
    def device(self) -> torch.device:
        """Where the artifact runs (the CPU for ONNX Runtime and OpenVINO)."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the outputs (float32 for every backend, whatever precision runs inside)."""
        return torch.float32

    def can_generate(self) -> bool:
        """Encoders do not generate (asked by transformers' pipelines)."""
        return False

    # ---- calling ------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, token_type_ids=None, **kwargs):
        if kwargs:
            self._check_extra(kwargs)
        input_ids = self._check_ids(input_ids)
        if input_ids.shape[-1] > self.facts.max_length:
            raise InputTooLongError(
                f"input has {input_ids.shape[-1]} tokens but this {self.facts.model_type} model accepts at most "
                f"{self.facts.max_length}; tokenize with truncation=True, max_length={self.facts.max_length}"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        else:
            attention_mask = _like_ids("attention_mask", attention_mask, input_ids)
        if token_type_ids is None and "token_type_ids" in self.facts.input_names:
            token_type_ids = torch.zeros_like(input_ids)
        elif token_type_ids is not None:
            token_type_ids = _like_ids("token_type_ids", token_type_ids, input_ids)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self._run({k: feeds[k] for k in self.facts.input_names})

    def _check_extra(self, kwargs: dict) -> None:
        """Refuse call arguments the engine cannot honour, rather than drop them: the answer would come back
        without what they ask for (``output_hidden_states=True`` giving ``hidden_states=None``, ``labels`` no
        ``loss``) or computed without them (``position_ids``, ``inputs_embeds``). Accepted: ``return_dict`` (the
        output is always a ``ModelOutput``), and any argument left at ``None`` or ``False``, as pipelines and
        sentence-transformers pass them."""
        bad = sorted(k for k, v in kwargs.items() if k != "return_dict" and v is not None and v is not False)
        if bad:
            hint = " (compute the loss from the logits it returns)" if "labels" in bad else ""
            raise DataError(
                f"this optimised artifact takes input_ids, attention_mask and token_type_ids and returns "
                f"{self.facts.output} only; {', '.join(f'{k}=' for k in bad)} would ask the model for something its "
                f"engine does not compute{hint}. Call the original model for that."
            )

    def _check_ids(self, input_ids) -> torch.Tensor:
        """``(batch, tokens)`` integer ids inside the vocabulary, or a DataError naming the fix. An id past the
        vocabulary (a tokenizer of another model) made the OpenVINO engine return numbers instead of failing."""
        if not isinstance(input_ids, torch.Tensor):
            input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() != 2 or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise DataError(
                f"input_ids must be a (batch, tokens) tensor of integer ids, got {input_ids.dtype} of shape "
                f"{tuple(input_ids.shape)}; tokenize a list of texts: tokenizer([text], return_tensors='pt')"
            )
        vocab = self.facts.hf_config.get("vocab_size")
        if not vocab or not input_ids.numel():
            return input_ids
        lo, hi = (int(v) for v in torch.aminmax(input_ids))  # ~2 µs a call
        if lo < 0 or hi >= vocab:
            bad = hi if hi >= vocab else lo
            raise DataError(
                f"token id {bad} is outside this model's vocabulary (0..{vocab - 1}): the inputs were tokenized by "
                "another model's tokenizer; use the artifact's own (artifact.tokenizer)"
            )
        return input_ids

    def _run(self, feeds: dict[str, torch.Tensor]):  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.inference_mode()
    def encode(self, texts: Iterable[str], batch_size: int = 32, *, bucketing: bool = True) -> torch.Tensor:
        """Mean-pooled embeddings (encoders) or logits (classifiers) of ``texts``, in input order.

        Batches are sorted by length (``ember.batching``) so little work is spent on padding.

        Example:
            >>> art.encode(["hello", "book a flight"]).shape  # doctest: +SKIP
            torch.Size([2, 384])
        """
        from ember.batching import map_in_buckets
        from ember.data.texts import check_texts
        from ember.models.checks import check_pad_token

        tok = self._need_tokenizer()
        check_pad_token(tok, "encode() pads each batch of texts with the artifact's tokenizer")
        texts = check_texts(texts, allow_empty=True)  # a list, read once: a generator is not used up

        def run(batch: list[str]) -> list[torch.Tensor]:
            enc = tok(batch, padding=True, truncation=True, max_length=self.facts.max_length, return_tensors="pt")
            out = self(**{k: v for k, v in enc.items() if k in self.facts.input_names})
            vec = out.logits if self.facts.output == "logits" else mean_pool(out.last_hidden_state.float(), enc["attention_mask"])
            return list(vec.float())

        if not texts:
            return torch.empty(0, self.config.num_labels if self.facts.output == "logits" else self.config.hidden_size)
        return torch.stack(map_in_buckets(texts, run, batch_size, sort=bucketing))

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this artifact has no tokenizer; pass tokenizer= to optimize() or load() a saved directory")
        return self.tokenizer

    # ---- saving -------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the artifact, its optimize config, its fidelity report and a format version to ``directory``.

        The manifest lists (and hashes) the files this save wrote, and only those: other files in the folder
        (the original checkpoint, notes) are left alone and not checked on load. Files an earlier ember save
        listed there and this one does not write (another backend's, another tokenizer's) are removed, so
        saving over an artifact leaves nothing of it to be read back. Each file is written beside the folder's
        contents and then renamed into place: an artifact loaded from this folder (OpenVINO maps its
        ``model.bin``) keeps running while it is saved over, where rewriting the file in place killed the
        process with SIGBUS.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        earlier = _files_listed_in(d)
        with tempfile.TemporaryDirectory(prefix=".ember-save-", dir=d) as tmp:
            staging = Path(tmp)
            self._save_files(staging)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(staging / "tokenizer"))
            # every file, the tokenizer's too: another model's tokenizer in its place gives wrong answers silently
            files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
            manifest = {
                "format_version": FORMAT_VERSION,
                "backend": self.optimize_config.kind,
                "config": self.optimize_config.to_dict(),
                "fidelity": self.fidelity.to_dict() if self.fidelity else None,
                "speed": self.speed.to_dict() if self.speed else None,
                "size_bytes": self.size_bytes,
                "build_seconds": self.build_seconds,
                "build_notes": list(self.build_notes),
                "facts": self.facts.to_dict(),
                "files": {f: _sha256(staging / f) for f in files},
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
            (d / MANIFEST).unlink(missing_ok=True)  # an interrupted save reads as no artifact, not as a mix
            for stale in sorted(earlier - set(files)):
                _remove_within(d, stale)
            for f in files:
                (d / f).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / f, d / f)
            os.replace(staging / MANIFEST, d / MANIFEST)
        return d

    def _save_files(self, directory: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _like_ids(name: str, value, input_ids: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor of ``input_ids``' shape (lists and numpy arrays taken as ``input_ids`` are), or a
    DataError naming the fix: ONNX Runtime and OpenVINO stopped with their own errors (or an AttributeError on a
    list), and the PyTorch engines broadcast a mask of one row over the batch."""
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if value.shape != input_ids.shape:
        raise DataError(
            f"{name} has shape {tuple(value.shape)} but input_ids {tuple(input_ids.shape)}; pass the {name} the "
            "tokenizer made with these input_ids (tokenizer(texts, padding=True, return_tensors='pt'))"
        )
    return value


_LISTED: set[type] = set()


def _list_as_sequence_classifier(cls: type) -> None:
    """List ``cls`` in transformers' ``AutoModelForSequenceClassification`` mapping, once.

    ``pipeline("text-classification")`` checks the model's class name against that mapping and logs an
    error (without refusing) for any other class. The key is ``cls`` itself, not a config class, so no
    ``from_pretrained``/``from_config`` lookup can ever resolve to it.
    """
    if cls in _LISTED:
        return
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.register(cls, cls, exist_ok=True)
    _LISTED.add(cls)


def _files_listed_in(directory: Path) -> set[str]:
    """The files the manifest in ``directory`` lists (an earlier save's), or none where there is no readable one."""
    try:
        listed = json.loads((directory / MANIFEST).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return set()
    return {f for f in listed if isinstance(f, str)} if isinstance(listed, dict) else set()


def _remove_within(directory: Path, name: str) -> None:
    """Delete ``directory / name`` (a file an earlier save wrote) and the folders it leaves empty; a name that
    points outside ``directory`` (a hand-edited manifest) is left alone."""
    root = directory.resolve()
    path = (directory / name).resolve()
    if root not in path.parents or not path.is_file():
        return
    path.unlink()
    for parent in path.parents:
        if parent == root:
            break
        try:
            parent.rmdir()
        except OSError:  # not empty
            break


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(directory: str | Path, *, skip: str | None = None) -> dict:
    """Read and validate ``ember-artifact.json``: format version and file hashes (except those of the files
    under the folder ``skip``, which the caller does not read)."""
    d = Path(directory)
    path = d / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{d} is not an ember artifact: {MANIFEST} is missing; save one with artifact.save(dir)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is corrupted ({exc}); re-create the artifact with ember optimize") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        raise ArtifactError(f"{path} is not an ember manifest (edited or damaged); re-create the artifact with ember optimize")
    missing = [k for k in ("format_version", "config", "facts") if k not in manifest]
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(missing)} (edited or damaged); re-create the artifact with ember optimize")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        hint = "upgrade ember" if isinstance(version, int) and version > FORMAT_VERSION else "re-create it with this ember"
        raise ArtifactError(
            f"{d} holds an artifact of format version {version!r}, this ember reads version {FORMAT_VERSION}; {hint}"
        )
    for name, digest in manifest.get("files", {}).items():
        if skip is not None and name.startswith(skip + "/"):
            continue
        f = d / name
        if not f.is_file():
            also = ", or pass the model's own tokenizer: load(directory, tokenizer=...)" if name.startswith("tokenizer/") else ""
            raise ArtifactError(f"{d} is incomplete: {name} is missing; re-create the artifact with ember optimize{also}")
        if _sha256(f) != digest:
            raise ArtifactError(f"{f} is corrupted: its SHA-256 does not match the one recorded when it was saved; re-create the artifact")
    return manifest


def load_artifact(directory: str | Path, *, tokenizer=None) -> OptimizedModel:
    """The artifact saved in ``directory`` (what :func:`ember.optimize.load` returns for a plain artifact)."""
    d = Path(directory)
    manifest = read_manifest(d, skip="tokenizer" if tokenizer is not None else None)
    try:
        config = config_from_dict(manifest["config"])
        facts = ModelFacts.from_dict(manifest["facts"])
        if not isinstance(facts.hf_config, dict) or not isinstance(facts.input_names, list | tuple):
            raise TypeError("facts.hf_config must be a dict and facts.input_names a list")
        fidelity = FidelityReport.from_dict(manifest["fidelity"]) if manifest.get("fidelity") else None
        speed = SpeedReport.from_dict(manifest["speed"]) if manifest.get("speed") else None
        size_bytes, build_seconds = int(manifest.get("size_bytes", 0)), float(manifest.get("build_seconds", 0.0))
        build_notes = manifest.get("build_notes", [])  # absent before build notes were saved
        if not isinstance(build_notes, list) or not all(isinstance(n, str) for n in build_notes):
            raise TypeError("build_notes must be a list of strings")
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a hand-edited manifest
        raise ArtifactError(f"{d / MANIFEST} does not describe an artifact ember can load ({type(exc).__name__}: {exc}); "
                            "re-create the artifact with ember optimize") from exc
    if tokenizer is None and (d / "tokenizer").is_dir():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(d / "tokenizer"))
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise ArtifactError(f"the tokenizer saved in {d / 'tokenizer'} cannot be read ({exc}); re-create the "
                                "artifact, or pass the model's own tokenizer: load(directory, tokenizer=...)") from exc
    art = _load_on_this_cpu(d, config, facts, tokenizer)
    art.fidelity, art.speed, art.size_bytes, art.build_seconds = fidelity, speed, size_bytes, build_seconds
    art.build_notes = build_notes
    return art


def _load_on_this_cpu(directory: Path, config: OptimizeConfig, facts: ModelFacts, tokenizer) -> OptimizedModel:
    """The backend's load; an engine whose runtime refuses this CPU (an artifact built on another machine) is named."""
    from ember.hardware import detect
    from ember.optimize.cpu import refused_cpu
    from ember.optimize.registry import backend_for

    try:
        return backend_for(config).load(directory, config, facts, tokenizer)
    except Exception as exc:
        refusal = refused_cpu(exc.__cause__ or exc, config, detect(), doing="loading")
        if refusal is None:
            raise
        raise refusal from exc
