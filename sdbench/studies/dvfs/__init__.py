"""DVFS and power-limit sweeps: `sdbench sweep`, and the library behind it.

A sweep measures one case at a grid of GPU settings (SM clock, memory clock, power limit) and
writes clean records for the analysis (``sdbench.analysis.dvfs``) and reports (``sdbench.output.report``):

1. The grid comes from the device (``nvmlDeviceGetSupportedGraphicsClocks`` and the memory and
   power-limit constraints), picked by a spec: ``every:N``, ``range:MIN-MAX[:N]``, ``list:A,B``,
   ``count:N`` or ``all``. Values are validated against the device's own list; nothing is
   hard-coded. ``--gpu-type`` and ``--profiling-mode`` are conveniences that choose a spec.
2. The plan (``plan.json``, a :class:`sdbench.distribute.plan.Plan`) is written first: points in randomised
   (seeded, recorded), interleaved or descending order, in blocks of one pass per repeat, with the
   default clock (``role: default-clock``: nothing locked) measured at the start, every
   ``default_every`` points, and at the end, so drift over the sweep (heat, other tenants) shows.
3. Execution (:func:`sdbench.distribute.plan.execute`) appends one record per finished point to
   ``results.jsonl``; ``--resume`` skips points already there. Before each point: an idle gap and a
   cooldown until the GPU is within ``cooldown_c`` of its starting idle temperature. Each point's
   settings are locked by a :class:`~sdbench.measure.clocks.ClockController`, the point is measured by
   the one Runner, and the window telemetry verifies the lock. A drifted or throttled point is
   measured once more and, if still wrong, flagged (``clock_verified``), never silently kept.
4. The original GPU settings are restored at the end, on an exception, and on SIGINT/SIGTERM.

Output directory: ``plan.json``, ``results.jsonl``, ``sweep.json`` (device, grid, order, seed,
timestamps, status, the restore, the default-clock drift check, and planned against measured points:
``points_planned``, ``points_to_measure``, ``points_done``, ``points_failed``, ``points_complete``,
``points_flagged`` = ``points_clock_flagged`` + ``points_drift_flagged``, each point once).

Read-only mode (machines whose clocks must not change): query the grid, write the plan, and
measure only the default-clock points, with telemetry (``clock_verified: read-only``).

The modules, in the order a sweep uses them (each imports only those before it):

- :mod:`~sdbench.studies.dvfs.grid`: grid specs resolved on the device's supported clocks and power limits;
  the ``--gpu-type`` presets.
- :mod:`~sdbench.studies.dvfs.points`: one point's settings, the measurement order, the plan points with their
  default-clock re-measurements.
- :mod:`~sdbench.studies.dvfs.options`: :class:`~sdbench.studies.dvfs.options.SweepOptions` and its checks.
- :mod:`~sdbench.studies.dvfs.state`: the output folder's files, the resume check, the state file,
  :class:`~sdbench.studies.dvfs.state.SweepResult`.
- :mod:`~sdbench.studies.dvfs.planning`: :func:`~sdbench.studies.dvfs.planning.plan_sweep` (queries only).
- :mod:`~sdbench.studies.dvfs.measuring`: the cooldown and the clock-lock hook that measures one point.
- :mod:`~sdbench.studies.dvfs.summary`: the default-clock drift check, point counts, what `sdbench sweep` prints.
- :mod:`~sdbench.studies.dvfs.run`: :func:`~sdbench.studies.dvfs.run.run_sweep`.

Import from the submodule that holds a name; this package re-exports nothing.
"""
