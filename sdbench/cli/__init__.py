"""The `sdbench` command line. `sdbench generate` (the default) measures one configuration and saves images.

Every flag has an effect; bad input gives one line naming the field, the value and what is allowed,
and exit code 2. Each command lives in `sdbench.cli.commands.<name>` (`register` and `run`); the shared
argument helpers in `sdbench.cli.args`. Building the parser imports no torch, diffusers, numpy or
scipy, so `sdbench --help` and `sdbench COMMAND --help` are instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from sdbench.cli.args import Parser, add_case_arguments, apply_preset
from sdbench.cli.commands import COMMANDS
from sdbench.errors import EXIT_BROKEN_PIPE, EXIT_CODES, EXIT_INTERRUPTED, EXIT_OUT_OF_MEMORY, SdbenchError

__all__ = ["add_case_arguments", "build_parser", "main"]

EPILOG_WIDTH = 78  # the epilog keeps its own line breaks (the exit-code table), so it is wrapped here


def exit_codes_epilog() -> str:
    """The exit-code table of `sdbench --help`."""
    import textwrap

    lines = ["exit codes:"]
    for code, meaning in EXIT_CODES:
        lines += textwrap.wrap(meaning, width=EPILOG_WIDTH, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
    lines += textwrap.wrap("`sdbench bench` and `generate --benchmark` return pytest's own exit code once pytest "
                           "has started (a bad suite axis is refused with 2 before).", width=EPILOG_WIDTH,
                           initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The whole `sdbench` parser: every command of COMMANDS, none skipped."""
    import textwrap

    parser = Parser(prog="sdbench", description="GPU performance and energy benchmarks for Stable Diffusion inference.",
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n".join(textwrap.wrap(
                        "`sdbench COMMAND --help` describes each command; with no command, `generate` runs (with no "
                        "flags at all: sd-v1.4 with the dpm++ scheduler on a GPU, tiny-sd without one).",
                        width=EPILOG_WIDTH)) + "\n\n" + exit_codes_epilog())
    parser.add_argument("--version", action="version", version=f"sdbench {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug information")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"sdbench.cli.commands.{name}").register(sub)
    return parser


def _version() -> str:
    from sdbench import __version__

    return __version__


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (`sdbench schedulers | head -3`): end quietly, as Python's docs advise.

    Python flushes stdout again at exit; pointing it at devnull keeps that flush from raising a second
    BrokenPipeError ("Exception ignored ...") after we return.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout is no real file (captured in tests): nothing will flush into a closed pipe
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run `sdbench` with `argv` (default: sys.argv[1:]); returns the exit code (see `sdbench --help`)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a closed pipe often shows only when the buffer is flushed
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if not argv or (argv[0] not in commands and argv[0] not in ("-h", "--help", "--version")):
        argv = ["generate", *argv]
    args = parser.parse_args(argv)
    args.argv = list(argv)  # the words as given: commands that fan out to one process per GPU reuse them
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        note = apply_preset(args)
        if note and not getattr(args, "quiet", False):
            print(f"sdbench: {note}", file=sys.stderr)
        return int(args.func(args) or 0)
    except SdbenchError as exc:
        print(f"sdbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sdbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:
        from sdbench.cli.failures import OOM_ADVICE, memory_state
        from sdbench.errors import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        # A command without its own out-of-memory message: still one line, never torch's traceback.
        import torch  # imported already: is_out_of_memory said so

        device = str(getattr(args, "device", None) or "auto")
        if device in ("auto", "cuda"):
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        print(f"sdbench: error: out of memory ({first_line}); {memory_state(device)}; {OOM_ADVICE}", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY


if __name__ == "__main__":
    raise SystemExit(main())
