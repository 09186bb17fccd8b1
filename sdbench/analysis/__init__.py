"""Analysis of measured records: DVFS optima, power-model features and fits, cross-GPU studies."""
