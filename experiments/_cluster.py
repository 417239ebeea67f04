"""The Dask plumbing of a sweep (private to :mod:`experiments.sweep`): the cluster it runs on,
the workers' BLAS threads and Ctrl-C.

:func:`_connect` yields a ``distributed.Client``, either to an existing scheduler (an address
or a scheduler file) or to an embedded ``LocalCluster`` of single-threaded worker processes
(by default one per usable core, :func:`_usable_cores`), spawned with their BLAS/OpenMP thread
counts in the environment (:func:`_blas_env`) and ignoring SIGINT (:func:`_sigint_ignored`, and
a worker plugin for restarted workers), so that only the client handles Ctrl-C and shuts the
cluster down. Inside a task, :func:`_limit_blas` pins the worker process's BLAS pools;
:func:`_describe_failure` turns a failed task into the ``error`` text of its index row.
``distributed`` is imported only when a cluster is started.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import threading
from pathlib import Path
from typing import Optional

from .sweepplan import SweepError


# ------------------------------------------------------------------------------- client side
def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _blas_env(threads: int) -> dict:
    n = str(int(threads))
    return {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
            "VECLIB_MAXIMUM_THREADS": n, "NUMEXPR_NUM_THREADS": n}


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored in this process (main thread only) while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _ignore_sigint() -> None:
    with contextlib.suppress(ValueError):          # not the main thread: nothing to do
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _make_plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    class IgnoreSigint(WorkerPlugin):
        """Worker plugin: the worker process ignores SIGINT (the sweep's client handles
        Ctrl-C and shuts the local cluster down)."""

        name = "adjointcore-ignore-sigint"

        def setup(self, worker):
            _ignore_sigint()

    return IgnoreSigint


def _ignore_sigint_plugin():
    """A worker plugin instance that makes each worker process ignore SIGINT."""
    return _make_plugin_class()()


def _register_plugin(client, plugin) -> None:
    register = getattr(client, "register_plugin", None) or client.register_worker_plugin
    with contextlib.suppress(Exception):                  # a nicety: never fail the sweep
        register(plugin, name=plugin.name)


@contextlib.contextmanager
def _connect(scheduler: Optional[str], workers: Optional[int], pending: int, blas_threads: int,
             say):
    """A ``distributed.Client``: to ``scheduler`` (an address or a scheduler file), or to an
    embedded LocalCluster of ``workers`` processes (default: the usable cores, at most one per
    pending run), one thread each; closed (the LocalCluster shut down) at the end."""
    from distributed import Client, LocalCluster
    if scheduler:
        try:
            if Path(scheduler).expanduser().is_file():
                client = Client(scheduler_file=str(Path(scheduler).expanduser()),
                                timeout="20s")
            else:
                client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as err:
            raise SweepError(f"--scheduler {scheduler!r}: no Dask scheduler answered ({err}); "
                             f"start one with `dask scheduler` (it prints its address, e.g. "
                             f"tcp://HOST:8786) and workers with `dask worker tcp://HOST:8786`, "
                             f"or leave out --scheduler to run on this machine.") from None
        try:
            n = len(client.scheduler_info().get("workers", {}))
            say(f"sweep: scheduler {client.scheduler.address} with {n} worker(s)"
                + ("; runs start when workers join (dask worker ADDRESS)" if n == 0 else ""))
            yield client
        finally:
            client.close()
        return
    n = max(1, min(workers or _usable_cores(), pending))
    # A free port for the scheduler's HTTP server (its dashboard when bokeh is installed):
    # the default 8787 would clash with another cluster on this machine. The worker processes
    # ignore Ctrl-C (this process stops the sweep and shuts them down): spawned while SIGINT is
    # ignored, and restarted ones through a worker plugin.
    with _sigint_ignored():
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0", env=_blas_env(blas_threads))
    client = Client(cluster)
    _register_plugin(client, _ignore_sigint_plugin())
    link = (f", dashboard {client.dashboard_link}"
            if importlib.util.find_spec("bokeh") is not None else "")
    say(f"sweep: local Dask cluster of {n} worker process(es), 1 thread and {blas_threads} BLAS "
        f"thread(s) each{link}")
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        with contextlib.suppress(Exception):
            cluster.close()


def _describe_failure(future) -> str:
    try:
        err = future.exception(timeout=5)
    except Exception as exc:  # noqa: BLE001 - the failure is reported, not raised
        err = exc
    name = type(err).__name__
    if name == "KilledWorker":
        return (f"KilledWorker: the workers running it died repeatedly (more than "
                f"distributed.scheduler.allowed-failures times; {err}); resubmit the sweep to "
                f"resume it from its checkpoint, and check the workers' memory")
    if isinstance(err, ModuleNotFoundError):
        return (f"{name}: {err}; install this project in the workers' environment "
                f"(pip install -e .) so that they can import experiments")
    return f"{name}: {err}"


# ------------------------------------------------------------------------------- worker side
_BLAS_LIMITED = {}


def _limit_blas(threads: Optional[int]) -> None:
    """Pin this worker process's BLAS/OpenMP pools to ``threads`` (once per process)."""
    if not threads or _BLAS_LIMITED.get("n") == threads:
        return
    with contextlib.suppress(ImportError):
        import threadpoolctl
        threadpoolctl.threadpool_limits(limits=int(threads))   # kept for the process's life
    _BLAS_LIMITED["n"] = threads
