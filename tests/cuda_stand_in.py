"""A CUDA stand-in for the CPU suite: the entry points users run go as far as a GPU machine
would take them, with torch's own argument rules enforced, and stop at the first real GPU work.

Under it, torch believes ``gpus`` CUDA devices are visible. Every call that on a GPU machine
only *names* a device (``torch.cuda.set_device``, ``current_device``, ``mem_get_info``,
``get_device_properties``, ``device_count``) runs torch's own code, so its own argument checks
apply (``set_device(torch.device("cuda"))`` raises torch's ValueError, as on a GPU), and only the
lowest, driver-facing calls are answered here, after checking the index is a visible device. The
first call that needs a real GPU (CUDA's lazy initialisation: moving a tensor or a model to
``cuda:N``, recording an event, creating a stream) raises :class:`CudaStandInReached`.

So an entry point that ends in ``CudaStandInReached`` got through every device-naming call to the
point where a GPU takes over; one that ends in any other error would have failed on a GPU too.
This is how the CPU suite sees the class of defect that once stopped extract on every GPU.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field

import torch

GIB = 2**30
FakeProperties = namedtuple("FakeProperties", "name total_memory major minor multi_processor_count")


class CudaStandInReached(BaseException):
    """The code reached real GPU work under the stand-in. A BaseException, so that no
    ``except Exception`` (a per-image skip, the CLI's error printer) can swallow it."""


@dataclass
class CudaStandIn:
    """What the code asked of the stand-in: (call, device index) in order."""

    gpus: int
    total_bytes: int
    calls: list[tuple[str, int]] = field(default_factory=list)
    current: int = 0

    def index(self, call: str, index) -> int:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"stand-in: {call} got device index {index!r}, not an int (torch resolves the index before this)")
        if not 0 <= index < self.gpus:
            raise RuntimeError(f"stand-in: {call}({index}): CUDA error: invalid device ordinal ({self.gpus} visible)")
        self.calls.append((call, index))
        return index

    def set_device(self, index) -> None:
        self.current = self.index("set_device", index)

    def mem_get_info(self, index) -> tuple[int, int]:
        self.index("mem_get_info", index)
        return self.total_bytes * 9 // 10, self.total_bytes

    def properties(self, index) -> FakeProperties:
        self.index("get_device_properties", index)
        return FakeProperties("CUDA stand-in", self.total_bytes, 9, 0, 132)

    def reached(self, *args, **kwargs):
        raise CudaStandInReached(f"real GPU work started after {self.calls}")


class _Cudart:
    def __init__(self, stand_in: CudaStandIn):
        self.cudaMemGetInfo = stand_in.mem_get_info


def install(monkeypatch, gpus: int = 1, total_gib: int = 80) -> CudaStandIn:
    """Make torch see ``gpus`` stand-in devices for the rest of the test (``monkeypatch`` undoes it)."""
    stand_in = CudaStandIn(gpus, total_gib * GIB)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch._C, "_cuda_setDevice", stand_in.set_device)
    monkeypatch.setattr(torch._C, "_cuda_getDevice", lambda: stand_in.current)
    # torch's current_device() and get_device_properties() initialise CUDA first; here they need not
    # (the argument handling is torch's own _get_device_index, called as torch calls it).
    from torch.cuda import _utils

    monkeypatch.setattr(torch.cuda, "current_device", lambda: stand_in.current)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: stand_in.properties(_utils._get_device_index(device, optional=True)))
    monkeypatch.setattr(torch.cuda, "cudart", lambda: _Cudart(stand_in))
    class StandInStream(torch.cuda.Stream):  # a class still, for annotations such as ``torch.cuda.Stream | None``
        def __new__(cls, device=None, priority=0, **kwargs):
            stand_in.index("Stream", _utils._get_device_index(stand_in.current if device is None else device, optional=True))
            stand_in.reached()

    monkeypatch.setattr(torch.cuda, "Stream", StandInStream)
    # The C++ side calls torch.cuda._lazy_init() by name before any tensor lives on a CUDA device.
    monkeypatch.setattr(torch.cuda, "_lazy_init", stand_in.reached)
    return stand_in
