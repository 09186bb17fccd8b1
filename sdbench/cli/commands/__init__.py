"""One module per `sdbench` command: `register(subparsers)` defines its parser, `run(args) -> int` runs it.

`register` imports nothing heavy (the help of every command is instant); `run` imports the domain
module that does the work only when the command runs. COMMANDS is the order `sdbench --help` lists them.
"""

from __future__ import annotations

COMMANDS: tuple[str, ...] = ("generate", "models", "schedulers", "bench", "compare", "quality", "plan", "workers",
                             "batch", "sweep", "report", "slurm")
