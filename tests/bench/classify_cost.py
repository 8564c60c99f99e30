"""The categoriser's two costs the throughput work counts: router start-up and time per message.

* start-up: a fresh interpreter imports the classifier and builds it with the default categories
  (what the router does before it takes its first message), and separately loads the language
  models the router warms up; median of three runs;
* per message: every message of tests/data/classify/eval.jsonl and holdout.jsonl (1 505 messages,
  7 languages, SMS to long emails) classified with its language given, as the router does; the
  best of three passes after a warm-up pass.

Both are CPU time of the process (time.process_time), not wall time: on a shared machine the wall
time mostly measures the neighbours; the CPU a message costs is what the throughput work counts.

    python -m tests.bench.classify_cost          # also part of `make bench`
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETS = [ROOT / "tests" / "data" / "classify" / name for name in ("eval.jsonl", "holdout.jsonl")]

_STARTUP = """
import time
t = time.process_time()
from services.router.classifier import Classifier
Classifier()
print(time.process_time() - t)
"""
_LANGUAGE = """
import time
t = time.process_time()
from services.router.language import warm_up
warm_up(["en", "ru", "bg", "pl", "lt", "uk", "de"])
print(time.process_time() - t)
"""


def _fresh(code: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def per_message_ms(passes: int = 3) -> tuple[float, int]:
    from services.router.classifier import Classifier

    records = [json.loads(line) for path in SETS for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    clf = Classifier()
    best = float("inf")
    for k in range(passes + 1):
        start = time.process_time()
        for r in records:
            clf.classify(r["text"], subject=r.get("subject"), language=r.get("lang"), channel=r.get("channel"))
        elapsed = time.process_time() - start
        if k:  # the first pass warms caches (skeletons, regexes)
            best = min(best, elapsed)
    return best / len(records) * 1000, len(records)


def measure() -> dict:
    ms, n = per_message_ms()
    return {"classifier_startup_s": round(_fresh(_STARTUP), 3), "language_models_startup_s": round(_fresh(_LANGUAGE), 3),
            "classify_ms_per_message": round(ms, 3), "classify_messages": n}


def describe(r: dict) -> str:
    return (f"router start-up: classifier {r['classifier_startup_s'] * 1000:.0f} ms, language models "
            f"{r['language_models_startup_s'] * 1000:.0f} ms; classification {r['classify_ms_per_message']:.3f} ms "
            f"per message ({r['classify_messages']} messages)")


if __name__ == "__main__":
    print(describe(measure()))
