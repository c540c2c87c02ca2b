"""The thread governor: threads = cores other processes leave idle; DDSM_THREADS fixes them."""

import pytest
import torch

from ddsm import threads


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_threads_follow_the_cores_other_processes_leave(monkeypatch):
    gov = threads.ThreadGovernor(max_threads=2)
    gov.cores = 2
    assert [gov.threads_for(o) for o in (0.0, 0.3, 0.67, 1.0, 1.7, 5.0)] == [2, 2, 1, 1, 1, 1]
    gov.max_threads = 1
    assert gov.threads_for(0.0) == 1


def test_update_reads_the_load_of_other_processes(monkeypatch, restore_threads):
    clock = {"wall": 0.0, "busy": 0.0, "ours": 0.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(threads.time, "process_time", lambda: clock["ours"])
    monkeypatch.setattr(threads, "_busy_seconds", lambda: clock["busy"])
    gov = threads.ThreadGovernor(max_threads=2, interval=3.0)
    gov.cores = 2
    torch.set_num_threads(2)
    clock.update(wall=1.0, busy=2.0, ours=1.0)  # too soon: nothing changes
    assert gov.update() == 2
    clock.update(wall=4.0, busy=8.0, ours=4.0)  # 4 s busy of ours, 4 s of another process over 4 s: one core taken
    assert gov.update() == 1
    clock.update(wall=8.0, busy=12.0, ours=7.9)  # the other process stopped (0.1 s in 4 s)
    assert gov.update() == 2


def test_ddsm_threads_fixes_the_count(monkeypatch, restore_threads):
    monkeypatch.setenv("DDSM_THREADS", "1")
    torch.set_num_threads(2)
    assert threads.adapt_threads() == 1 and torch.get_num_threads() == 1
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("DDSM_THREADS", bad)
        with pytest.raises(ValueError, match="DDSM_THREADS"):
            threads.adapt_threads()


def test_busy_seconds_reads_proc_stat():
    busy = threads._busy_seconds()
    assert busy is None or busy > 0
