"""``--ray`` and ``--workers``: the options of every command that fills or scores, and the executor they make."""

from __future__ import annotations

from typing import Annotated

import typer

from ember.cli.common import console
from ember.scale.errors import ACCEPT_ENVIRONMENT, MAX_RESTARTS, NO_RAY, START_TIMEOUT

RayOpt = Annotated[str | None, typer.Option(
    "--ray", help="Compute on Ray: 'local' (start Ray on this machine), 'auto' (RAY_ADDRESS, else the cluster "
    "`ray start --head` started here), HOST:PORT or ray://HOST:10001. Needs pip install \"ember\\[ray]\".")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Ray actors computing in parallel (with --ray; "
                                                "default 2).")]

# The ways out ember.scale's messages name in Python words, in command line words (see common.friendly_errors).
RAY_SWITCHES: dict[str, str] = {
    NO_RAY: "leave out --ray",
    MAX_RESTARTS: "raise RayConfig.max_restarts (from Python)",
    START_TIMEOUT: "pass fewer --workers",
    ACCEPT_ENVIRONMENT: "make the versions match (from Python, RayConfig(check_environment=False) accepts the "
    "difference)",
}


def ray_executor(address: str | None, workers: int | None, verbose: bool = False):
    """The executor ``--ray ADDRESS --workers N`` ask for, with Ray started or joined now (before any data is
    read, so a wrong address fails fast); ``None`` without ``--ray``."""
    if address is None:
        if workers is not None:
            raise ValueError(f"--workers {workers} needs --ray (local, auto or an address): without it everything "
                             "runs in this process")
        return None
    from ember.scale import RayConfig, RayExecutor
    from ember.scale.cluster import ALREADY

    executor = RayExecutor(RayConfig(address=address, workers=2 if workers is None else workers, verbose=verbose))
    cluster = executor.start()
    where = ("started on this machine" if cluster.started else "already running in this process"
             if cluster.address == ALREADY else f"at {cluster.address}")
    console.print(f"Ray {where}: {cluster.nodes} node(s), {cluster.cpus:g} CPUs; {executor.config.workers} workers")
    return executor
