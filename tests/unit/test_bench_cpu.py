"""The bench's CPU accounting (tests/bench/cpu.py): what a process and its children spent over a
window is what the bench prints per message, so it must count a child's time, whether the child is
still running or already reaped, and nothing from before the window."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.bench import cpu
from tests.bench.bench import batch_sizes

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_a_reaped_childs_cpu_counts_for_its_parent_within_the_window() -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                               "sys.stdin.readline()\n"
                               f"subprocess.run([sys.executable, '-c', {BURN.format(s=0.3)!r}])\n"
                               "sys.stdin.readline()\n"],
                              stdin=subprocess.PIPE, text=True)
    try:
        group = cpu.Group("parent", lambda: cpu.descendants([parent.pid]))
        start = cpu.sample([group])
        assert parent.stdin is not None
        parent.stdin.write("go\n")
        parent.stdin.flush()
        # The child has run and been reaped once the parent reads its second line: wait for that by
        # polling the parent's cutime rather than a sleep.
        for _ in range(1000):
            got = cpu.read_stat(parent.pid)
            assert got is not None
            if got[1].children >= 0.25 * cpu.CLK_TCK:
                break
            time.sleep(0.01)
        spent = cpu.cpu_seconds(start, cpu.sample([group]))["parent"]
        assert 0.25 <= spent < 5
    finally:
        parent.communicate("done\n", timeout=30)


def test_cpu_spent_before_the_window_is_not_counted() -> None:
    burner = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.3) + "import sys\nsys.stdin.readline()\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        group = cpu.Group("burner", lambda: [burner.pid])
        for _ in range(1000):  # until the burn is done: its time is all before the window
            got = cpu.read_stat(burner.pid)
            assert got is not None
            if got[1].own >= 0.3 * cpu.CLK_TCK:
                break
            time.sleep(0.01)
        start = cpu.sample([group])
        end = cpu.sample([group])
        assert cpu.cpu_seconds(start, end)["burner"] < 0.1
    finally:
        burner.communicate("done\n", timeout=30)


def test_batch_sizes_are_the_mean_over_the_window_per_series() -> None:
    before = {'router:sb_batch_size_sum{queue="router.inbound"}': 100.0,
              'router:sb_batch_size_count{queue="router.inbound"}': 50.0}
    after = {'router:sb_batch_size_sum{queue="router.inbound"}': 700.0,
             'router:sb_batch_size_count{queue="router.inbound"}': 100.0,
             'notifier:sb_batch_size_sum{queue="notifier.events"}': 0.0,
             'notifier:sb_batch_size_count{queue="notifier.events"}': 0.0}
    assert batch_sizes(before, after) == {'router:sb_batch_size{queue="router.inbound"}': 12.0}
