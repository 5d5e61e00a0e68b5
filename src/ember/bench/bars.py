"""The benchmark's progress: one rich bar per variant on stderr (stdout stays free for ``--json``)."""

from __future__ import annotations

from ember.bench.report import VariantResult


class VariantTask:
    """One variant's bar: its phase in the description, one step per model call; silent without a bar."""

    def __init__(self, bar, task_id, name: str) -> None:
        self.bar, self.id, self.name = bar, task_id, name

    def phase(self, what: str) -> None:
        if self.bar is not None:
            self.bar.update(self.id, description=f"{self.name}: {what}")

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.id, n)


class ProgressBars:
    """A context manager holding the bars of a run; silent when disabled.

    Example:
        >>> with ProgressBars(False) as bars:
        ...     bars.start("fp32", 10).advance()
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def __enter__(self) -> ProgressBars:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, name: str, total: int) -> VariantTask:
        task_id = self.bar.add_task(name, total=total) if self.bar is not None else None
        return VariantTask(self.bar, task_id, name)

    def finish(self, task: VariantTask, result: VariantResult) -> None:
        if self.bar is not None:
            done = "[green]done" if result.passed else "[red]failed"
            self.bar.update(task.id, description=f"{task.name}: {done}", completed=self.bar.tasks[task.id].total)
