"""RLIMIT_NOFILE is raised to the hard limit by the process itself (a child process, so the test's own stays)."""

from __future__ import annotations

import subprocess
import sys


def test_raise_nofile_limit_reaches_the_hard_limit() -> None:
    code = (
        "import resource; from pushbench.oslimits import raise_nofile_limit\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "assert raise_nofile_limit() == (hard, hard)\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
