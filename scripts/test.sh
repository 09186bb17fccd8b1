#!/usr/bin/env bash
# The test command: sets up .venv if needed, then runs the whole test suite (CPU; GPU tests skip).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/setup-env.sh
source scripts/setup-env.sh
exec python -m pytest "$@"
