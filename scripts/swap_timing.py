"""How long a scheduler change takes on a warm pipeline (a swap, never a rebuild), for every scheduler key."""

from __future__ import annotations

import argparse
import json
import statistics
import time

from sdbench.pipelines.build import set_scheduler
from sdbench.runner import RunnerConfig
from sdbench.session import Bench
from sdbench.spec.schedulers import SCHEDULERS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sdxl")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="swap_timing.json")
    args = ap.parse_args()
    bench = Bench(args.device, runner_config=RunnerConfig(warmup_min_s=0, min_rounds=1, max_rounds=1, idle_s=0))
    case = bench.case(args.model, weights="synthetic", steps=2)
    built, _ = bench.pipeline(case)
    unet_id = id(built.pipe.unet)
    times_ms: dict[str, list[float]] = {}
    for _ in range(3):
        for key in SCHEDULERS:
            t0 = time.perf_counter()
            set_scheduler(built.pipe, key)
            times_ms.setdefault(key, []).append((time.perf_counter() - t0) * 1e3)
    assert id(built.pipe.unet) == unet_id and bench.cache.builds == 1  # swaps only, no rebuild
    first = {k: v[0] for k, v in times_ms.items()}  # the first swap to a key (built with the pipeline)
    again = {k: statistics.median(v[1:]) for k, v in times_ms.items()}  # later swaps reuse it
    worst = max(first, key=first.get)
    print(f"{args.model} on {bench.device}: first swap median {statistics.median(first.values()):.2f} ms, "
          f"slowest {worst} {first[worst]:.2f} ms; repeated swaps median {statistics.median(again.values()):.3f} ms; "
          f"pipeline builds {bench.cache.builds}; every scheduler built with the pipeline in "
          f"{built.scheduler_prebuild_s * 1e3:.1f} ms")
    with open(args.out, "w") as fh:
        json.dump({"model": args.model, "device": bench.device, "swap_ms": times_ms, "first_ms": first,
                   "repeat_median_ms": again,
                   "scheduler_prebuild_ms": built.scheduler_prebuild_s * 1e3}, fh, indent=1)
    bench.close()


if __name__ == "__main__":
    main()
