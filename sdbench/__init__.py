"""sdbench: GPU performance and energy benchmarks for Stable Diffusion inference."""

__version__ = "0.1.0"
