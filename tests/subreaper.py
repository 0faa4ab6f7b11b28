"""Run a command under a child subreaper, as a service manager runs a service: what is
orphaned below the command comes to this process, not to pid 1. Prints the command's pid,
reaps until SIGTERM, then exits (a test cleans up what is left before that)."""

import ctypes
import os
import signal
import subprocess
import sys

if __name__ == "__main__":
    assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)
    print(child.pid, flush=True)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            signal.pause()
