"""Operating-system limits a big cell runs into, raised where a process may raise them itself."""

from __future__ import annotations

import resource


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns (soft, hard) afterwards.

    Each client connection holds two descriptors (asyncio's and the duplicate its kernel counters are read
    through) and each server connection one, so thousands of clients need more than the usual soft 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, hard
        soft = hard
    return soft, hard
