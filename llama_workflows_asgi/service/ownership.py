"""Who owns a run: process identities recorded on handler rows.

An owner id is ``host:pid:Ltoken``. Host and pid are there for people reading
the rows; they prove nothing (two containers can both be pid 1 on one host
name). Whether an owner is alive is told by its liveness token, which the
store's ``liveness`` holds for this process and probes for others (see
``store.liveness``); the ``L`` marks ids whose token can be probed.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from ..store.liveness import LIVENESS_MARK


@dataclass(frozen=True)
class Owner:
    """This process's identity as a run owner."""

    host: str
    pid: int
    token: str

    @classmethod
    def for_this_process(cls) -> Owner:
        """A fresh identity: this host and pid, and a token unique to this start."""
        return cls(socket.gethostname(), os.getpid(), LIVENESS_MARK + secrets.token_hex(6))

    @property
    def id(self) -> str:
        """The string stored on the rows this process owns."""
        return f"{self.host}:{self.pid}:{self.token}"
