#!/usr/bin/env python3
"""Who kept the waiting threads from a core: reads `perf sched timehist`
and, for every wake-up of a thread named by PATTERNS that waited longer
than THRESHOLD_MS to run (the "sch delay" column), adds up what ran on its
CPU meanwhile, by thread name.

    perf sched record -o sched.data -- sleep 7     # during the load
    perf sched timehist -i sched.data > timehist.txt
    benches/sched/blame.py timehist.txt [THRESHOLD_MS] [PATTERNS]

THRESHOLD_MS defaults to 1; PATTERNS (comma-separated substrings of the
thread names) to the server's workers and herald-bench's threads:
herald-worker,client,publisher,herald-bench. Prints how many waits there
were, their sum, and the milliseconds each other thread ran during them.
Standard library only.
"""
import collections
import re
import sys


def main():
    path = sys.argv[1]
    threshold = float(sys.argv[2]) / 1e3 if len(sys.argv) > 2 else 1e-3
    patterns = (sys.argv[3] if len(sys.argv) > 3 else "herald-worker,client,publisher,herald-bench").split(",")
    rows = []  # (end of the run, cpu, task, sch delay, run time), seconds
    for line in open(path):
        p = line.split()
        if len(p) < 6:
            continue
        try:
            rows.append((float(p[0]), p[1], p[2], float(p[4]) / 1e3, float(p[5]) / 1e3))
        except ValueError:
            continue  # headers
    by_cpu = collections.defaultdict(list)
    for r in rows:
        by_cpu[r[1]].append(r)
    blame = collections.Counter()
    waits, total = 0, 0.0
    for end, cpu, task, delay, run in rows:
        if delay <= threshold or not any(x in task for x in patterns):
            continue
        waits += 1
        total += delay
        lo, hi = end - run - delay, end - run  # when it waited
        for end2, _, task2, _, run2 in by_cpu[cpu]:
            overlap = min(end2, hi) - max(end2 - run2, lo)
            if overlap > 0:
                blame[re.sub(r"\[.*", "", task2)] += overlap * 1e3
    print(f"{waits} waits over {threshold * 1e3:g} ms, {total * 1e3:.1f} ms in all; what ran meanwhile (ms):")
    for name, ms in blame.most_common(12):
        print(f"  {ms:8.1f}  {name}")


if __name__ == "__main__":
    main()
