"""Dynamic batching: the largest batch that fits in memory, and the throughput- and energy-optimal batch.

The predecessor's "dynamic batching" was a fixed slice and never looked at memory. Here:

- `max_batch.find_max_batch` grows the batch by doubling, then bisects between the last batch that fitted
  and the first that failed, one real pipeline call per probe at the case's settings. An out-of-memory
  error is caught inside the process, its memory is recovered (references dropped, `gc.collect()`,
  `torch.cuda.empty_cache()`, peak statistics reset) and the search goes on.
- `sweep.batch_sweep` measures several batch sizes through the Runner (`Bench.measure`) and picks the
  batch with the most images/s and the one with the fewest joules per image, each with a bootstrap
  statement of how sure that choice is.
- `report.plot_batch_sweep` draws the sweep; `sdbench batch` is the command line.

A CPU has no VRAM to run out of, so there a `limit` bounds the search. The out-of-memory path is
exercised on the CPU by a `memory_budget_bytes`: a probe whose peak exceeds the budget raises
`SimulatedOutOfMemoryError`, a subclass of torch's OOM error that goes through exactly the same
except-and-recover path as a real one.

Modules, each importing only those above it:

- `memory`: out-of-memory as a result: the guarded call (`attempt`, `Attempt`), the recovery after an
  OOM, `SimulatedOutOfMemoryError`, and `GIB`;
- `probe`: one real pipeline call at a batch size and its peak memory (`PipelineProbe`,
  `LiveTensorPeak` on the CPU), and the prompt's length in CLIP tokens (`prompt_token_fields`);
- `max_batch`: the fits search (`find_max_batch`, `MaxBatchResult`);
- `sweep`: the batch sweep and its throughput and energy optima (`batch_sweep`, `summarize_sweep`,
  `BatchSweep`, `parse_batch_sizes`);
- `report`: the sweep and the search as tables, and the sweep's plot.
"""
