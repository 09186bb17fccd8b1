#!/usr/bin/env bash
# The seed's twelve usage examples, typed as the seed wrote them (`sdbench` for `python
# StableDiffusionViaHF.py`, `sdbench sweep` for launch.sh, `sdbench plan`/`slurm render` for the sbatch
# scripts), each timed, its exit code and the precision it reached collected into one markdown table.
#
#   bash scripts/seed_examples.sh OUTDIR [N ...]     # all twelve, or the numbered ones
#
# Clocks are never changed: the DVFS example runs --read-only (default clock only) unless
# SDBENCH_SEED_DVFS_FLAGS says otherwise (e.g. "--device simulated"). Each example runs in its own folder
# under OUTDIR; OUTDIR/seed_examples.md is the table, OUTDIR/NN.log each example's output.
set -uo pipefail
out="${1:?usage: seed_examples.sh OUTDIR [N ...]}"
shift
mkdir -p "$out"
out="$(cd "$out" && pwd)"
sdbench="${SDBENCH:-sdbench}"
dvfs_flags="${SDBENCH_SEED_DVFS_FLAGS:---read-only}"
per_example_timeout_s="${SDBENCH_SEED_TIMEOUT_S:-900}"

examples=(
  ""  # 1-based
  "$sdbench"
  "$sdbench --model-variant sdxl --scheduler unipc --steps 20"
  "$sdbench --model-variant sdxl-turbo --steps 4"
  "$sdbench --benchmark --benchmark-type energy_research"
  "$sdbench --benchmark --benchmark-type memory_stress --batch-size 4"
  "$sdbench --benchmark --benchmark-type quality_test --num-images 20"
  "$sdbench --multi-resolution --export-metrics scaling_study.json"
  "$sdbench --scheduler-comparison --export-metrics scheduler_analysis.json"
  "$sdbench --model-variant sdxl --benchmark --export-metrics sdxl_performance.json"
  "$sdbench sweep --profiling-mode baseline --gpu-type A100 --model-variant sd-v1.4 --steps 20 $dvfs_flags --output-dir sweep-baseline"
  "$sdbench sweep --profiling-mode dvfs --gpu-type A100 --num-runs 3 --model-variant sdxl --scheduler dpm++ --batch-size 2 $dvfs_flags --output-dir sweep-dvfs"
  "$sdbench plan make --models sdxl -o plan.json && $sdbench slurm render plan.json --preset h100 -o job.sbatch"
)
labels=(
  ""
  "Default SD v1.4 with optimized scheduler"
  "SDXL with ultra-fast scheduler for speed studies"
  "Turbo model for maximum speed analysis"
  "Energy research benchmark suite"
  "Memory stress testing for scaling analysis"
  "Quality consistency analysis"
  "Multi-resolution scaling analysis"
  "Scheduler comparison study"
  "Cross-model performance analysis"
  "launch.sh baseline profiling (sd-v1.4, 20 steps)"
  "launch.sh DVFS study (sdxl, dpm++, batch 2)"
  "SLURM job submission (H100)"
)
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(1 2 3 4 5 6 7 8 9 10 11 12)

table="$out/seed_examples.md"
if [ ! -f "$table" ]; then
  {
    echo "| # | seed example | command | exit | wall time | outcome |"
    echo "|---|---|---|---|---|---|"
  } > "$table"
fi
for n in "${wanted[@]}"; do
  cmd="${examples[$n]}"
  dir="$out/$(printf '%02d' "$n")"
  mkdir -p "$dir"
  log="$out/$(printf '%02d' "$n").log"
  echo "== example $n: $cmd" | tee "$log"
  limit_s="$per_example_timeout_s"
  if [ -n "${SDBENCH_SEED_DEADLINE:-}" ]; then  # an epoch second by which every example must have ended
    left_s=$(( SDBENCH_SEED_DEADLINE - $(date +%s) - 5 ))
    if [ "$left_s" -lt 30 ]; then
      echo "| $n | ${labels[$n]} | \`${cmd//$sdbench/sdbench}\` | - | - | not run (no time left) |" >> "$table"
      continue
    fi
    [ "$left_s" -lt "$limit_s" ] && limit_s="$left_s"
  fi
  start=$(date +%s.%N)
  (cd "$dir" && timeout "$limit_s" bash -c "$cmd") >>"$log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  wall=$(python3 -c "print(f'{$end - $start:.0f} s')")
  outcome=$(python3 - "$dir" "$rc" <<'PY'
import glob, json, sys
folder, rc = sys.argv[1], int(sys.argv[2])
recs = []
for path in glob.glob(f"{folder}/**/*.json*", recursive=True):
    try:
        if path.endswith(".jsonl"):
            recs += [json.loads(line) for line in open(path) if line.strip()]
        else:
            doc = json.load(open(path))
            if isinstance(doc, dict) and isinstance(doc.get("records"), list):
                recs += doc["records"]
    except (OSError, ValueError):
        pass
seen, rows = set(), []
for r in recs:
    if not isinstance(r, dict) or "case_id" not in r or r.get("time_per_image_s_median") is None:
        continue
    if r["case_id"] in seen:
        continue
    seen.add(r["case_id"])
    hw = r.get("time_per_image_s_ci95_halfwidth_rel")
    rows.append(f"{r['case_id']}: {1 / r['time_per_image_s_median']:.3g} img/s"
                + (f" ±{100 * hw:.1f} %" if hw is not None else "") + f" ({r.get('stop_reason')})")
head = "stopped at its time limit" if rc == 124 else ("ok" if rc == 0 else f"failed (exit {rc})")
print(head + (f"; {len(rows)} case(s): " + "; ".join(rows[:3]) + (" ..." if len(rows) > 3 else "") if rows else ""))
PY
)
  echo "| $n | ${labels[$n]} | \`${cmd//$sdbench/sdbench}\` | $rc | $wall | $outcome |" >> "$table"
  echo "== example $n: exit $rc, $wall" | tee -a "$log"
done
echo "table: $table"
