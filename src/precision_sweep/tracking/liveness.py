"""Which runs belong to processes that are gone, and closing them.

Every run records the host and the pid of the process that writes it. A run left RUNNING by a
process that no longer exists on this host (SIGKILL, out-of-memory kill, power loss) is
stale: it is marked KILLED so that no run stays RUNNING forever.
"""

from __future__ import annotations

import os
import socket

HOST_TAG = "precision_sweep.host"
PID_TAG = "precision_sweep.pid"


def process_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(run) -> bool:
    """A RUNNING run whose writer process, on this host, is dead."""
    if run.info.status != "RUNNING":
        return False
    tags = run.data.tags
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    pid = int(tags[PID_TAG])
    return pid != os.getpid() and not _pid_alive(pid)


def reap(client, experiment_id: str, filter_string: str) -> list[str]:
    """Mark the stale RUNNING runs matching ``filter_string`` KILLED; return their ids."""
    query = "attributes.status = 'RUNNING'" + (f" and {filter_string}" if filter_string else "")
    killed = []
    for run in client.search_runs([experiment_id], filter_string=query, max_results=10000):
        if is_stale(run):
            client.set_tag(run.info.run_id, "precision_sweep.killed_reason", "its process died while it was RUNNING")
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_id)
    return killed
