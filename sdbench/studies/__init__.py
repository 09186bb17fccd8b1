"""Study logic (DVFS sweeps, batch-size scaling, quality): what to measure and in which order; no argparse."""
