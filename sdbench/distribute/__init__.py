"""How runs are launched: plans, per-GPU workers, SLURM arrays and the pytest suite runner."""
