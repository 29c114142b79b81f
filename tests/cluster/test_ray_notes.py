"""`ray_notes_to_stderr`, around the Ray work of `twinsearch embed` and `index --ray`: Ray's line about the
constructor arguments of its actor pools, written by its C++ core straight to file descriptor 2, does not
reach the terminal; everything else written there does, at once and unchanged. No Ray is started: the
lines are written as Ray writes them."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from twinsearch.server.commands.embed import ray_notes_to_stderr

# As Ray 2.60's core worker writes it (core_worker.cc), once per process, when a Ray Data actor pool starts.
POOL_NOTE = (b"[2026-12-04 19:01:08,150 E 5293 5293] core_worker.cc:2465: Actor with class name: "
             b"'MapWorker(MapBatches(DecodingReplica))' and ID: 'cb397dd52ca87cdd40e22a3601000000' has constructor "
             b"arguments in the object store and max_restarts > 0. If the arguments in the object store go out of "
             b"scope or are lost, the actor restart will fail. See https://github.com/ray-project/ray/issues/53727 "
             b"for more details.\n")
OTHER_ERROR = b"[2026-12-04 19:01:09,002 E 5293 5293] core_worker.cc:2530: Failed to register actor.\n"


def test_the_pool_note_is_dropped_and_the_rest_of_stderr_passes(capfd):
    before = os.fstat(2)
    with ray_notes_to_stderr():
        os.write(2, b"\rembed:  50%|#####     | 3/6")  # a progress bar: its line is not ended
        os.write(2, POOL_NOTE)
        os.write(2, OTHER_ERROR)
        os.write(2, b"\rembed: 100%|##########| 6/6" + POOL_NOTE)  # the note right after the bar
        assert sys.stdout is sys.stderr  # what Ray prints goes there too
    os.write(2, b"after the block\n")
    out, err = capfd.readouterr()
    assert out == "" and err == (
        "\rembed:  50%|#####     | 3/6" + OTHER_ERROR.decode() + "\rembed: 100%|##########| 6/6after the block\n")
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)  # stderr is itself again
    assert not any(t.name == "stderr-filter" for t in threading.enumerate())


def test_stderr_is_restored_when_the_block_raises(capfd):
    before = os.fstat(2)
    with pytest.raises(KeyboardInterrupt), ray_notes_to_stderr():
        os.write(2, OTHER_ERROR)
        raise KeyboardInterrupt
    assert os.fstat(2).st_ino == before.st_ino and sys.stdout is not sys.stderr
    assert capfd.readouterr().err == OTHER_ERROR.decode()
