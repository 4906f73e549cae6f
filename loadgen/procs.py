"""The child processes a cell starts (the server, the TLS proxy): stopping one, and the end of its log."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path


def stop_process(proc: subprocess.Popen[bytes], grace_s: float) -> int | None:
    """SIGTERM, then SIGKILL when it has not exited within ``grace_s``; its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file on one line (for a one-line error), or "" when unreadable."""
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""
