"""ember's commands show ember's output only: other libraries' logs, warnings and progress bars behind ``--verbose``.

What a first ``ember bench`` printed between ember's own lines, and where each comes from:

- torchao's ``Failed to load .../_C_mxfp8...so`` and PyTorch's ``register_constant() on Enum subclasses is
  deprecated``: records of the ``torchao`` and ``torch`` loggers (``logging``);
- ONNX Runtime's ``WARNING:root:Please consider to run pre-processing before quantization``: ``logging.warning()``
  on the root logger, which also installs a root handler on first use (``logging.basicConfig``);
- transformers' ```loss_type=None` ... ForCausalLMLoss`` (its logger) and its ``Loading weights`` bar (tqdm);
- NNCF's ``Statistics collection`` / ``Applying Smooth Quant`` bars: rich progress on rich's global console;
- Python warnings from any of them.

:func:`quiet` holds all of that back while a command runs and puts every setting back afterwards. ember's own
output is untouched: its console (``ember.cli.common.console``), its progress bars (their own consoles), and its
warnings (:class:`~ember.errors.EmberWarning`, and warnings raised from ember's own modules).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Annotated

import typer

from ember.errors import EmberWarning

VerboseOpt = Annotated[
    bool, typer.Option("--verbose", help="Also show other libraries' logs, warnings and progress bars.")
]


@contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Hold back other libraries' logging, warnings and progress bars for the ``with`` block (all of it shown
    as before when ``verbose``).

    Example:
        >>> with quiet():
        ...     logging.getLogger("torchao").warning("Failed to load ...")  # not shown
    """
    if verbose:
        yield
        return
    with ExitStack() as stack:
        stack.enter_context(_logging_held_back())
        stack.enter_context(_foreign_warnings_hidden())
        stack.enter_context(_rich_global_console_muted())
        stack.enter_context(_transformers_bars_hidden())
        yield


@contextmanager
def _logging_held_back() -> Iterator[None]:
    """No record up to WARNING from any logger (ember logs nothing; its messages are errors, warnings and its
    console). ERROR and above still show. The root logger's handlers and level are put back afterwards, undoing
    the ``basicConfig()`` that a bare ``logging.warning()`` call (ONNX Runtime's) makes."""
    root = logging.getLogger()
    handlers, level, disabled = list(root.handlers), root.level, logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(disabled)
        root.handlers[:] = handlers
        root.setLevel(level)


def _from_ember() -> bool:
    """Whether the warning being shown was raised by ember's own code (the first frame outside ``warnings``
    and this module, walking out from ``showwarning``)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "") in ("warnings", __name__):
        frame = frame.f_back
    name = "" if frame is None else frame.f_globals.get("__name__", "")
    return name == "ember" or (name.startswith("ember.") and not name.startswith("ember.cli."))


@contextmanager
def _foreign_warnings_hidden() -> Iterator[None]:
    """Show ember's warnings (EmberWarning, or raised in ember's modules) as Python would; drop the others."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, EmberWarning) or _from_ember():
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning
        yield


@contextmanager
def _rich_global_console_muted() -> Iterator[None]:
    """NNCF draws its progress on rich's global console; ember's bars and messages use consoles of their own."""
    import rich

    console = rich.get_console()
    was = console.quiet
    console.quiet = True
    try:
        yield
    finally:
        console.quiet = was


@contextmanager
def _transformers_bars_hidden() -> Iterator[None]:
    """transformers' tqdm bars (``Loading weights``): off through huggingface_hub, whose setting transformers
    copies when it is imported, and through transformers itself where it already is (its logger is held back
    with the others). Importing transformers here would cost a second and a half on commands that never load it."""
    from huggingface_hub import utils as hub

    hub_off = hub.are_progress_bars_disabled()
    hf = sys.modules.get("transformers.utils.logging")
    hf_on = None if hf is None else hf.is_progress_bar_enabled()
    hub.disable_progress_bars()
    if hf is not None:
        hf.disable_progress_bar()
    try:
        yield
    finally:
        hf = sys.modules.get("transformers.utils.logging")
        if hf is not None and (hf_on if hf_on is not None else not hub_off):
            hf.enable_progress_bar()  # (which turns huggingface_hub's on too: set next)
        if not hub_off:
            hub.enable_progress_bars()
        else:
            hub.disable_progress_bars()
