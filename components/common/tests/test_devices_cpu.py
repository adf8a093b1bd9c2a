"""How many CPU cores a step may use (common.devices.usable_cpu_cores)."""

import os

from latent_verbalizer.components.common.devices import available_host_bytes, usable_cpu_cores


def test_cores_are_at_most_the_affinity_mask():
    cores = usable_cpu_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))


def test_available_memory_is_read_from_the_system():
    available = available_host_bytes()
    assert available is None or available > 0
