"""Execution backends: where and how one attempt of a run executes."""

from .base import AttemptResult, RunExecutor, RunFuture, RunSpec
from .inline import InlineExecutor

__all__ = ["AttemptResult", "InlineExecutor", "RunExecutor", "RunFuture", "RunSpec"]
