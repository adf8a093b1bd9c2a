"""Who holds a write lease (``write_lease``): the record a lease object holds (run id, host,
pid, since when, a token per hold), how long a lease lives, and whether its holder's process
still runs."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass

LEASE_ENV = "LVERB_LEASE_S"
DEFAULT_EXPIRY_S = 180.0


def lease_expiry_s() -> float:
    """Seconds after its last renewal that a lease counts as abandoned: ``$LVERB_LEASE_S`` or 180."""
    raw = os.environ.get(LEASE_ENV, "").strip()
    if not raw:
        return DEFAULT_EXPIRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{LEASE_ENV}={raw!r} is not a positive number of seconds; unset it for the default "
                         f"({DEFAULT_EXPIRY_S:.0f} s)")
    return value


def writer_run_id(run_id: str = "") -> str:
    """The run id a lease names: the pipeline's run id when given, else one made for this process
    (a CLI run: ``cli-<random>``), so two CLI runs never count as the same run."""
    return run_id.strip() or _PROCESS_RUN_ID


_PROCESS_RUN_ID = f"cli-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Holder:
    """Who holds a lease; ``token`` tells one hold from another, ``renewed`` changes with every renewal."""
    run_id: str
    host: str
    pid: int
    since: float      # unix time the hold began (holder's clock, for messages)
    renewed: float
    token: str

    @classmethod
    def new(cls, run_id: str) -> Holder:
        now = time.time()
        return cls(writer_run_id(run_id), socket.gethostname(), os.getpid(), now, now, secrets.token_hex(8))

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Holder | None:
        try:
            d = json.loads(data)
            return cls(str(d["run_id"]), str(d["host"]), int(d["pid"]), float(d["since"]), float(d["renewed"]),
                       str(d["token"]))
        except (ValueError, KeyError, TypeError):
            return None   # a lease object someone else wrote by hand: treated by age alone

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"run {self.run_id} on host {self.host} (pid {self.pid}), writing since {since}"


@dataclass(frozen=True)
class _Seen:
    """A lease as a would-be writer found it: its holder, its age on the store's clock, and
    what a take-over must name to be sure it replaces exactly this version (S3 ETag or token)."""
    holder: Holder | None
    age_s: float
    version: str


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
