#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the sdbench benchmark suite.
# With no GPU it runs the embedded default (tiny models at 64x64 on the CPU, a few minutes on 2 cores);
# with a GPU, the real-size default matrix. Extra arguments go to `sdbench bench`.
# Results go into sdbench-results/<time>-all/ under the directory this script is run from (records.jsonl,
# benchmark.json, summary.md), the run is saved into pytest-benchmark's history in .benchmarks/<gpu>-<clocks>/
# there, and the last lines printed say where and what to do next (sdbench compare, pytest-benchmark list).
set -euo pipefail
here="$(pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/setup-env.sh
source scripts/setup-env.sh
cd "$here"
exec sdbench bench "$@"
