"""The exception tree of the package.

Every error the package raises on purpose derives from :class:`OrchestratorError`.
Configuration mistakes are :class:`ConfigError` (a :class:`ValueError`), and their
message always names the worker, the field and how to fix it.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of every error raised by the orchestrator on purpose."""


class ConfigError(OrchestratorError, ValueError):
    """A worker or orchestrator option is invalid.

    :param message: the whole sentence, naming the worker, the field and the fix.
    :param worker: the worker's name, or ``None`` for orchestrator-wide options.
    :param field: the option at fault, or ``None``.
    """

    def __init__(self, message: str, *, worker: str | None = None, field: str | None = None):
        super().__init__(message)
        self.worker = worker
        self.field = field


class DependencyCycleError(ConfigError):
    """Registering a worker would close a cycle of ``depends_on`` edges.

    ``cycle`` lists the names along the cycle, first name repeated at the end.
    """

    def __init__(self, message: str, *, worker: str, cycle: list[str]):
        super().__init__(message, worker=worker, field="depends_on")
        self.cycle = cycle


class UnknownWorkerError(ConfigError, KeyError):
    """A name refers to no registered worker."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class NotRunningError(OrchestratorError):
    """An operation needs a started orchestrator (for example ``trigger_worker(wait=True)``)."""


class ContainmentError(OrchestratorError):
    """The containment asked for is not available on this machine (the message says what is
    missing and how to get it)."""


class NestedStartError(OrchestratorError):
    """``start()`` was called while the orchestrator's launcher imports the main script (a
    script whose start is not under ``if __name__ == "__main__":``)."""
