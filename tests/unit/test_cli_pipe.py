"""`switchboard classify … | head`: the reader leaving early is not an error worth a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLDOUT = Path(__file__).parents[1] / "data" / "classify" / "holdout.jsonl"


def test_a_closed_pipe_ends_classify_quietly(tmp_path: Path):
    # Three copies of the holdout set: far more output than a pipe buffers (64 KiB), so the writer
    # is still writing when the reader leaves, however short each line is.
    src = tmp_path / "big.jsonl"
    src.write_text(HOLDOUT.read_text(encoding="utf-8") * 3, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "classify", str(src)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=120)
    assert first.startswith(b"{")  # it did classify before the reader left
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert rc == 141  # as if killed by SIGPIPE, what shells expect of a writer whose reader left
