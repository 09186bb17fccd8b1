#!/usr/bin/env bash
# Creates .venv (once) and installs sdbench with its test dependencies into it.
# Sourced by scripts/bench.sh and scripts/test.sh; safe to run again (it skips work already done).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SDBENCH_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "sdbench: creating virtual environment in $venv" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
# Some machines' pip configs name local mirror folders that may be absent: drop those warnings only.
quiet_pip() { "${pip[@]}" "$@" 2> >(grep -v "^WARNING: Location" >&2); }
stamp="$venv/.sdbench-installed"
want="$(cat "$root/pyproject.toml" "$root/scripts/setup-env.sh" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  # Without a GPU, take the CPU build of torch so that nothing pulls a multi-GB CUDA build.
  if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      quiet_pip torch
    else
      quiet_pip "torch==2.13.0"
    fi
  fi
  # The real CLIP BPE vocabulary comes with sdbench's own dependency openai-clip (package clip/).
  quiet_pip -e "$root[test]"
  # Test-only: tests/unit/pipelines/test_tokenizer.py checks the no-import package lookup on open_clip (which holds the
  # same file), so the checkout keeps it; --no-deps keeps torchvision (and through it a CUDA torch) out.
  quiet_pip --no-deps "open_clip_torch==3.3.0"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export TRANSFORMERS_VERBOSITY="${TRANSFORMERS_VERBOSITY:-error}"
export HF_HUB_DISABLE_TELEMETRY=1
