"""What can run: model architectures, schedulers, weight sources, prompts, simulated-device names and optimisation profiles (no torch import at module level)."""
