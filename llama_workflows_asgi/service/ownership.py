"""Who owns a run: process identities recorded on handler rows.

An owner id is ``host:pid:token``. Leases expire on their own, but a process
restarted on the same host should not wait for that: an owner on this host
whose process is gone (or whose pid is ours under another token, as after a
container restart) is known dead at once.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Owner:
    """This process's identity as a run owner."""

    host: str
    pid: int
    token: str

    @classmethod
    def for_this_process(cls) -> Owner:
        """A fresh identity: this host and pid, and a token unique to this start."""
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(6))

    @property
    def id(self) -> str:
        """The string stored on the rows this process owns."""
        return f"{self.host}:{self.pid}:{self.token}"

    def dead_among(self, owner_ids: Iterable[str]) -> list[str]:
        """The owners in ``owner_ids`` that are provably gone (same host, no such process)."""
        return [owner_id for owner_id in owner_ids if self._is_dead(owner_id)]

    def _is_dead(self, owner_id: str) -> bool:
        host, _, rest = owner_id.partition(":")
        pid_text = rest.partition(":")[0]
        if host != self.host or not pid_text.isdigit() or owner_id == self.id:
            return False
        pid = int(pid_text)
        return pid == self.pid or not _process_exists(pid)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
