#!/usr/bin/env bash
# The test command: sets up .venv if needed, brings up the test SLURM cluster, then runs the whole
# test suite (CPU; GPU tests skip) and stops the cluster again.
#
# The real-SLURM tests (tests/integration/test_slurm.py, marker `slurm`) need a running single-node cluster:
# scripts/slurm-test-cluster.sh installs Debian's packages (as root, ~7 s) and starts munged,
# slurmctld and slurmd by hand (no systemd). Where that is impossible (not root, no apt-get, ports
# taken) the suite still runs and those tests are skipped, with a banner saying so.
# SDBENCH_SLURM=off skips the cluster altogether; a cluster that was already running is left running.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/setup-env.sh
source scripts/setup-env.sh

cluster=scripts/slurm-test-cluster.sh
we_started_slurm=0
slurm_skip_reason=""
slurm_skip_banner() {
  slurm_skip_reason="$1"
  echo "##############################################################################" >&2
  echo "# sdbench: NO TEST SLURM CLUSTER - the real-SLURM tests will be SKIPPED." >&2
  echo "# Reason: $1" >&2
  echo "# (bash $cluster install && bash $cluster start brings one up)" >&2
  echo "##############################################################################" >&2
}
stop_slurm() { # shellcheck disable=SC2317 # called by the EXIT trap
  if [ "$we_started_slurm" = 1 ]; then
    bash "$cluster" stop || echo "sdbench: stopping the test SLURM cluster failed" >&2
  fi
}
trap stop_slurm EXIT

if [ "${SDBENCH_SLURM:-on}" = "off" ]; then
  slurm_skip_banner "SDBENCH_SLURM=off"
elif bash "$cluster" status >/dev/null 2>&1; then
  # shellcheck source=/dev/null
  source <(bash "$cluster" env)
elif ! bash "$cluster" install; then
  slurm_skip_banner "munge/slurm are not installed and could not be installed (see above)"
elif ! bash "$cluster" start; then
  slurm_skip_banner "the cluster did not start (see the daemon logs above)"
  bash "$cluster" stop >/dev/null 2>&1 || true
else
  we_started_slurm=1
  # shellcheck source=/dev/null
  source <(bash "$cluster" env)
fi

rc=0
python -m pytest "$@" || rc=$?
if [ "$rc" != 0 ] && [ "$we_started_slurm" = 1 ]; then
  echo "sdbench: tests failed; the test SLURM cluster's logs:" >&2
  bash "$cluster" logs || true
fi
if [ -n "$slurm_skip_reason" ]; then
  slurm_skip_banner "$slurm_skip_reason"  # again, where it is seen: after pytest's output
fi
exit "$rc"
