"""orchestrator: run many background workers on one machine, on schedules, with
dependencies, mutual exclusion, priorities, retries and hard timeouts.

Logging goes through loguru and is off until the application calls
``loguru.logger.enable("orchestrator")``.
"""

from loguru import logger as _logger

from .config import JobPriority, OverlapPolicy, WorkerConfig, WorkerExecutionMode
from .core import WorkerOrchestrator
from .errors import (ConfigError, ContainmentError, DependencyCycleError, NestedStartError,
                     NotRunningError, OrchestratorError, UnknownWorkerError)
from .events import RunEvent
from .runs import Cause, Outcome, RunRecord
from .state import StateError

__version__ = "0.1.0"

__all__ = [
    "Cause", "ConfigError", "ContainmentError", "DependencyCycleError", "JobPriority",
    "NestedStartError", "NotRunningError",
    "OrchestratorError", "Outcome", "OverlapPolicy", "RunEvent", "RunRecord",
    "StateError", "UnknownWorkerError", "WorkerConfig", "WorkerExecutionMode",
    "WorkerOrchestrator",
]

_logger.disable("orchestrator")
