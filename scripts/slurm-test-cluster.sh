#!/usr/bin/env bash
# A real single-node SLURM cluster for the tests, from Debian's packages, without systemd.
#
#   slurm-test-cluster.sh install   apt-get install munge slurmctld slurmd slurm-client (as root)
#   slurm-test-cluster.sh start     start munged, slurmctld and slurmd by hand (idempotent)
#   slurm-test-cluster.sh stop      cancel jobs, stop the daemons by PID, remove the state
#   slurm-test-cluster.sh status    exit 0 if the cluster answers, 1 if not
#   slurm-test-cluster.sh env       print the exports the tests need: source <(slurm-test-cluster.sh env)
#   slurm-test-cluster.sh logs      print the tail of every daemon log (for CI failures)
#
# Everything (munge key and socket, slurm.conf, state, spool, logs, fake GPU device nodes) lives in
# one private directory, $SDBENCH_SLURM_DIR (default /tmp/sdbench-slurm-$UID), so nothing under /etc
# is touched and `stop` leaves the machine as it was. Facts this relies on (found the hard way):
# - proctrack/cgroup fails silently where the cgroup freezer is not mounted (containers, some VMs):
#   jobs report COMPLETED and write nothing. Hence proctrack/linuxproc + task/none, and tests check
#   outputs, never the job state alone.
# - gres.conf File= must name character devices; inert ones made with mknod (major 195, NVIDIA's)
#   work and give each task its own CUDA_VISIBLE_DEVICES.
# - If munged dies, every client call hangs ~10 s: `status` checks munged's PID first.
# - Stopping slurmd does not stop running jobs: cancel them first. Daemons can linger as zombies
#   where PID 1 reaps late, so liveness is read from /proc/PID/status, not `kill -0`.
set -euo pipefail

dir="${SDBENCH_SLURM_DIR:-${TMPDIR:-/tmp}/sdbench-slurm-$(id -u)}"
fake_gpus="${SDBENCH_SLURM_FAKE_GPUS:-4}"   # fake GPUs on the node (0 disables gres)
node_cpus="${SDBENCH_SLURM_CPUS:-8}"        # declared, not real: 4 concurrent 1-CPU tasks need >= 4
port_base="${SDBENCH_SLURM_PORT_BASE:-6817}" # slurmctld on this port, slurmd on the next
conf="$dir/slurm.conf"

say() { echo "slurm-test-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

# --- process helpers ---------------------------------------------------------------------------
# alive PID: the process exists and is not a zombie (a zombie has exited; only its reaping is late).
alive() {
  local pid="$1" state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/status" ] || return 1
  state="$(awk '/^State:/ {print $2; exit}' "/proc/$pid/status" 2>/dev/null || true)"
  [ -n "$state" ] && [ "$state" != "Z" ] && [ "$state" != "X" ]
}

pid_of() { # pid_of NAME: the PID recorded in NAME.pid, or nothing
  local f="$dir/$1.pid"
  if [ -r "$f" ]; then tr -dc '0-9' < "$f"; fi
}

wait_until() { # wait_until SECONDS COMMAND...: poll every 0.1 s
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

not_alive() { ! alive "$1"; }

stop_pid() { # stop_pid NAME: TERM, wait up to 10 s, then KILL; only the PID this script recorded
  local name="$1" pid
  pid="$(pid_of "$name")"
  if [ -n "$pid" ] && alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until 10 not_alive "$pid"; then
      say "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_until 5 not_alive "$pid" || die "$name (pid $pid) is still running"
    fi
  fi
  rm -f "$dir/$name.pid"
}

# --- commands ----------------------------------------------------------------------------------
cmd_install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null; then
    say "munge and slurm are installed"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "install needs root (apt-get)"
  command -v apt-get >/dev/null || die "install needs apt-get (Debian/Ubuntu)"
  # Without systemd the packages' init scripts must not try to start the daemons (they would use
  # /etc/munge's key and the default ports); policy-rc.d is Debian's switch for that.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; added_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      munge slurmctld slurmd slurm-client >"${TMPDIR:-/tmp}/slurm-apt.log" 2>&1 \
    || { apt-get update -q >>"${TMPDIR:-/tmp}/slurm-apt.log" 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
              munge slurmctld slurmd slurm-client >>"${TMPDIR:-/tmp}/slurm-apt.log" 2>&1; }
  } || rc=$?
  if [ "$added_policy" = 1 ]; then rm -f "$policy"; fi
  if [ "$rc" != 0 ]; then
    tail -n 20 "${TMPDIR:-/tmp}/slurm-apt.log" >&2
    die "apt-get install failed (exit $rc)"
  fi
  say "installed: $(dpkg-query -W -f='${Package} ${Version}  ' munge slurmctld slurmd slurm-client)"
}

write_config() {
  local host slurm_user gres_line=""
  host="$(hostname -s)"
  slurm_user="$(id -un)"
  mkdir -p "$dir"/{state,spool,log,tmp,dev}
  chmod 700 "$dir"
  # munge: a private key (never /etc/munge's), readable only by us.
  if [ ! -s "$dir/munge.key" ]; then
    head -c 1024 /dev/urandom > "$dir/munge.key"
  fi
  chmod 400 "$dir/munge.key"
  if [ "$fake_gpus" -gt 0 ]; then
    local i
    for ((i = 0; i < fake_gpus; i++)); do
      # Inert character devices with NVIDIA's major number: slurmd only stats them.
      if [ ! -c "$dir/dev/nvidia$i" ] && ! mknod "$dir/dev/nvidia$i" c 195 "$i" 2>/dev/null; then
        say "warning: mknod is not permitted here: no fake GPUs (jobs asking for --gres=gpu would never start)"
        fake_gpus=0
        break
      fi
    done
  fi
  echo "$fake_gpus" > "$dir/fake-gpus"
  if [ "$fake_gpus" -gt 0 ]; then
    gres_line="Gres=gpu:$fake_gpus"
    printf 'NodeName=%s Name=gpu File=%s/dev/nvidia[0-%d]\n' "$host" "$dir" "$((fake_gpus - 1))" > "$dir/gres.conf"
  else
    : > "$dir/gres.conf"
  fi
  cat > "$conf" <<EOF
# Written by scripts/slurm-test-cluster.sh: a private single-node cluster for sdbench's tests.
ClusterName=sdbench-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port_base
SlurmdPort=$((port_base + 1))
SlurmUser=$slurm_user
SlurmdUser=$slurm_user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
TmpFS=$dir/tmp
# No cgroups: proctrack/cgroup silently runs nothing where the freezer is not mounted.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
# Array tasks start ~1 s apart instead of 3.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
# The node declares more CPUs than this machine has; let the config win over the hardware.
SlurmdParameters=config_overrides
ReturnToService=2
# Keep finished jobs visible to scontrol for a while (status reads them; there is no sacct).
MinJobAge=600
KillWait=2
SlurmdTimeout=30
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$node_cpus RealMemory=16000 $gres_line State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

cluster_answers() {
  local pid
  pid="$(pid_of munged)"; [ -n "$pid" ] && alive "$pid" || return 1
  pid="$(pid_of slurmctld)"; [ -n "$pid" ] && alive "$pid" || return 1
  pid="$(pid_of slurmd)"; [ -n "$pid" ] && alive "$pid" || return 1
  SLURM_CONF="$conf" timeout 15 scontrol ping >/dev/null 2>&1
}

node_ready() { # the node is registered and can take jobs
  local state
  state="$(SLURM_CONF="$conf" timeout 15 sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)"
  case "$state" in idle|mixed|allocated|completing) return 0 ;; esac
  return 1
}

cmd_start() {
  for exe in munged slurmctld slurmd scontrol sbatch; do
    command -v "$exe" >/dev/null || die "$exe not found: run '$0 install' first"
  done
  if [ -r "$conf" ] && cluster_answers && node_ready; then
    say "already running (SLURM_CONF=$conf)"
    return 0
  fi
  # Leftovers of a half-started cluster: stop them before starting clean.
  cmd_stop --quiet
  write_config
  local started=$SECONDS
  munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge.seed"
  wait_until 10 test -S "$dir/munge.socket" || { cmd_logs; die "munged did not create its socket"; }
  # -c: a clean start (no state from an earlier cluster in this directory).
  SLURM_CONF="$conf" slurmctld -c -f "$conf"
  wait_until 20 env SLURM_CONF="$conf" scontrol ping >/dev/null 2>&1 || { cmd_logs; die "slurmctld did not answer"; }
  SLURM_CONF="$conf" slurmd -f "$conf" -N "$(hostname -s)"
  if ! wait_until 30 node_ready; then
    cmd_logs
    die "the node did not become ready: $(SLURM_CONF="$conf" sinfo -h -N -o '%T %E' 2>&1 || true)"
  fi
  say "started in $((SECONDS - started)) s: $(SLURM_CONF="$conf" sinfo -h -N -o 'node %N %T, %c CPUs, gres %G')"
  say "use it with: source <($0 env)"
}

cmd_stop() {
  local quiet=0
  [ "${1:-}" = "--quiet" ] && quiet=1
  [ -d "$dir" ] || { [ "$quiet" = 1 ] || say "not running"; return 0; }
  # Running jobs outlive slurmd: cancel them while the controller can still do it.
  local ctld munge
  ctld="$(pid_of slurmctld)"; munge="$(pid_of munged)"
  if [ -n "$ctld" ] && alive "$ctld" && [ -n "$munge" ] && alive "$munge"; then
    local jobs
    jobs="$(SLURM_CONF="$conf" timeout 15 squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ' || true)"
    if [ -n "${jobs// /}" ]; then
      # shellcheck disable=SC2086 # job ids are digits from squeue
      SLURM_CONF="$conf" timeout 15 scancel $jobs 2>/dev/null || true
      no_jobs() { [ -z "$(SLURM_CONF="$conf" timeout 15 squeue -h -o '%A' 2>/dev/null || true)" ]; }
      wait_until 20 no_jobs || say "jobs still listed after scancel; stopping anyway"
    fi
  fi
  stop_pid slurmd
  stop_pid slurmctld
  stop_pid munged   # last: the others need it to shut down cleanly
  rm -rf "$dir"
  [ "$quiet" = 1 ] || say "stopped"
}

cmd_status() {
  if [ -r "$conf" ] && cluster_answers; then
    SLURM_CONF="$conf" sinfo -N -o '%N %T %c %G' 2>/dev/null
    return 0
  fi
  say "not running"
  return 1
}

cmd_env() {
  printf 'export SLURM_CONF=%q\n' "$conf"
  printf 'export SDBENCH_SLURM_DIR=%q\n' "$dir"
  # What start managed to create, which may be fewer than asked for (no mknod in some containers).
  printf 'export SDBENCH_SLURM_FAKE_GPUS=%q\n' "$(cat "$dir/fake-gpus" 2>/dev/null || echo 0)"
}

cmd_logs() {
  local f
  for f in "$dir"/log/*.log; do
    [ -r "$f" ] || continue
    echo "==> $f <==" >&2
    tail -n 30 "$f" >&2
  done
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  logs) cmd_logs ;;
  *) echo "usage: $0 {install|start|stop|status|env|logs}" >&2; exit 2 ;;
esac
