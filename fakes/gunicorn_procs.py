"""What a test or a benchmark can see of a gunicorn it started: its worker processes, their CPU time and
the sockets each one holds, read from Linux's /proc (empty answers elsewhere).

Shared by tests/test_gunicorn.py (every worker listens on its own socket) and bench/receiver.py (how
connections and CPU spread over the workers), so it lives with the fakes rather than in either.
"""

from __future__ import annotations

import os
from pathlib import Path


def worker_stats(server_pid: int) -> dict[int, list[str]]:
    """/proc/PID/stat fields (after the name) of each gunicorn worker process of `server_pid`; empty off Linux."""
    workers = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[1]) == server_pid:  # ppid
            workers[int(stat.parent.name)] = fields
    return workers


def worker_cpu(server_pid: int) -> float | None:
    """CPU seconds used so far by the gunicorn worker processes of `server_pid` (None off Linux)."""
    if not Path("/proc").is_dir():
        return None
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in worker_stats(server_pid).values())  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_sockets(server_pid: int, port: int, state: str = "01") -> dict[int, set[str]]:
    """The TCP sockets on `port` in `state` (01 established, 0A listening) that each gunicorn worker holds."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    inodes = {fields[9] for fields in map(str.split, lines)
              if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state}
    held: dict[int, set[str]] = {}
    for pid in worker_stats(server_pid):
        held[pid] = set()
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                inode = os.readlink(fd)[8:-1]  # "socket:[INODE]"
            except OSError:
                continue  # closed while we looked
            if inode in inodes:
                held[pid].add(inode)
    return held
