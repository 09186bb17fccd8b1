"""The pytest-benchmark suites, installed as the package ``sdbench.benchmarks`` (see pyproject.toml).

This folder is a package so that a wheel carries it and ``sdbench bench`` finds it by name wherever
sdbench is installed; in a checkout, ``pytest benchmarks`` collects it as before.
"""
