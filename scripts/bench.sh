#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the sdbench benchmark suite.
# With no GPU it runs the embedded default (tiny models at 64x64 on the CPU, in about a minute);
# with a GPU, the real-size default matrix. Extra arguments go to `sdbench bench`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/setup-env.sh
source scripts/setup-env.sh
exec sdbench bench "$@"
