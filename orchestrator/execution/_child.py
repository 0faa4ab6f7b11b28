"""Run one function attempt in a fresh interpreter; the other side is ``process.py``.

It is started by file path, ``python _child.py PAYLOAD_FD RESULT_FD``, so that it never
imports the orchestrator package (slow to import, and none of the user's business)::

    PAYLOAD_FD --> pickle (preparation data, pickled call)
                     multiprocessing.spawn.prepare(preparation data)
                         sys.path, cwd, sys.argv, the parent's __main__ as __mp_main__
                     unpickle (function, pass_argument, argument); call it
    RESULT_FD  <-- 8-byte big-endian length + one pickled message, either
                     ("returned", type name, pickled value)   or
                     ("failed", one-line error, traceback text)

A failure travels as plain strings, so an exception that cannot be pickled still arrives
whole. A return value that cannot be pickled fails the attempt here, with its type named.
"""

import sys

# The interpreter put this file's directory first on sys.path. It holds the orchestrator's
# own modules (base.py, process.py, ...), which must not shadow the user's.
if not (sys.flags.isolated or sys.flags.safe_path):
    del sys.path[0]

import os  # noqa: E402  (only after sys.path is fixed)
import pickle  # noqa: E402
import struct  # noqa: E402
import traceback  # noqa: E402


def main(argv: list[str]) -> None:
    payload_fd, result_fd = int(argv[1]), int(argv[2])
    # Programs the function execs must not hold the result pipe open.
    os.set_inheritable(result_fd, False)
    with open(payload_fd, "rb") as payload:
        preparation, call = pickle.load(payload)
    try:
        import multiprocessing.spawn

        multiprocessing.spawn.prepare(preparation)
        function, pass_argument, argument = pickle.loads(call)
    except BaseException as exc:  # reported to the parent, which records it
        message = ("failed", f"cannot load the function: {_error_line(exc)}",
                   _format_traceback(exc))
    else:
        message = _call(function, pass_argument, argument)
    _send(result_fd, message)


def _call(function, pass_argument: bool, argument) -> tuple:
    try:
        value = function(argument) if pass_argument else function()
    except BaseException as exc:  # every way out of user code is a result
        return ("failed", _error_line(exc), _format_traceback(exc))
    try:
        data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:
        return ("failed",
                f"result of type {type(value).__name__!r} cannot be pickled: {_error_line(exc)}",
                _format_traceback(exc))
    return ("returned", type(value).__name__, data)


def _error_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:
        text = "<exception str() failed>"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _format_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException:
        return f"{_error_line(exc)}\n(the traceback could not be formatted)\n"


def _send(fd: int, message: tuple) -> None:
    body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack(">Q", len(body)) + body)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)


if __name__ == "__main__":
    main(sys.argv)
