"""Where the bulk pipeline decodes images, and the CPUs a local Ray instance is given for it."""

from __future__ import annotations

import pytest

from twinsearch.client.errors import InvalidArgument
from twinsearch.server.cluster.pipeline import EmbedSettings, decode_in_tasks, local_size, replica_count
from twinsearch.server.cluster.runtime import RaySettings


@pytest.mark.parametrize(("decode", "gpus", "in_tasks"), [
    ("auto", 0, False), ("auto", 2, True), ("tasks", 0, True), ("tasks", 1, True), ("replicas", 0, False),
    ("replicas", 4, False),
])
def test_auto_decodes_in_tasks_only_beside_gpus(decode, gpus, in_tasks):
    assert decode_in_tasks(EmbedSettings(decode=decode), gpus) is in_tasks


def test_decode_tasks_get_a_cpu_of_their_own_on_a_local_instance():
    local = RaySettings(None, 2, 200)
    assert local_size(local, EmbedSettings(encoders=2, decode="replicas")).num_cpus == 2
    assert local_size(local, EmbedSettings(encoders=2, decode="tasks")).num_cpus == 3
    cluster = RaySettings("10.0.0.1:6379", None, None)
    assert local_size(cluster, EmbedSettings(encoders=8, decode="tasks")) is cluster


def test_an_unknown_place_is_refused():
    with pytest.raises(InvalidArgument, match="decode must be one of auto, tasks, replicas"):
        EmbedSettings(decode="gpu")


GIB = 1024 ** 3


@pytest.mark.parametrize(("requested", "gpus", "cpus", "memory", "count"), [
    (3, 0, 2, 16 * GIB, 3),     # asked for: as asked, whatever the cluster
    (0, 4, 64, 16 * GIB, 4),    # one per GPU
    (0, 0, 2, 16 * GIB, 2),     # one per CPU
    (0, 0, 64, 8.5 * GIB, 8),   # as far as the memory holds a replica's reservation
    (0, 0, 4, 0.5 * GIB, 1),    # at least one
    (0, 0, 3, 0, 3),            # memory unknown
])
def test_replica_count(requested, gpus, cpus, memory, count):
    assert replica_count(requested, gpus, cpus, memory) == count


def test_a_negative_replica_count_is_refused():
    with pytest.raises(InvalidArgument, match="encoders must be >= 0"):
        EmbedSettings(encoders=-1)
