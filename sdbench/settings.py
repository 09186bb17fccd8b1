"""One table of settings: every option sdbench's front doors share, with its check, flags, default and help.

Each :class:`Setting` row names one option once: what it sets (``scope`` and ``name``: a ``RunnerConfig``
field, a ``Case`` field, a matrix axis, an output option of the suites, a plan or sweep setting), its type
and check (a range, a multiple, choices, a pattern), its CLI flag(s), its pytest option, its default and
unit, and its help. From the rows:

* :func:`add_arguments` adds argparse arguments (the CLI's commands) and :func:`add_pytest_options` the pytest
  plugin's ``addoption`` calls, in the spirit of pytest-benchmark's ``add_*_options(addoption, prefix)``:
  the same row gives ``--max-time`` and ``--sd-max-time`` the same check, default and help;
* :func:`check` and :meth:`Setting.check` refuse a bad value with one :class:`~sdbench.errors.ConfigError`
  naming the field, the value and what is allowed (``RunnerConfig``, ``Case``, ``SweepOptions``, plans and
  SLURM options all validate here);
* :func:`check_keys` refuses an unknown key (a plan file's ``"schedular"``) naming its close matches;
* :data:`SUITES` is the one list of benchmark suites (the plugin's markers, the CLI's choices, pytest.ini).

Imported by ``sdbench --help``: nothing here imports torch, diffusers, numpy or scipy; choices that live in
heavy modules (optimisation profiles) are looked up only when a value is checked.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdbench.errors import ConfigError

__all__ = [
    "SETTINGS",
    "MEASUREMENT_KEYS",
    "PLAN_AXES",
    "SUITES",
    "OptionError",
    "Setting",
    "add_arguments",
    "add_pytest_options",
    "check",
    "check_axis",
    "check_keys",
    "check_runner",
    "close_matches",
    "default_of",
    "get",
    "in_scope",
    "runner_defaults",
]

# --- the benchmark suites: written once, here ---------------------------------------------------------
#: Every suite in benchmarks/ (its pytest marker) and what it measures, in the order they run and are listed.
SUITES: Mapping[str, str] = {
    "speed": "the model x scheduler x resolution x batch matrix",
    "energy_research": "energy per image with CI, idle-subtracted",
    "memory_stress": "long prompts, high resolutions, growing batches",
    "quality_test": "output fidelity against an fp32 reference",
    "artistic_styles": "the seed's style prompts",
    "multi_resolution": "one case at several resolutions",
    "scheduler_comparison": "one case with every scheduler",
    "dvfs": "clock points (simulated GPU unless clocks may be changed)",
}

# --- choices that several rows share --------------------------------------------------------------------
DTYPE_NAMES: tuple[str, ...] = ("fp32", "fp16", "bf16")
ATTENTION_BACKENDS: tuple[str, ...] = ("sdpa", "flash", "efficient", "math", "cudnn", "sliced", "xformers")
OFFLOAD_MODES: tuple[str, ...] = ("none", "model", "sequential")
ENERGY_SOURCES: tuple[str, ...] = ("auto", "counter", "timeline", "rapl", "none")
TIMESTEP_SPACINGS: tuple[str, ...] = ("leading", "trailing", "linspace")
PROFILE_NAMES_HELP = "eager, channels-last, compile, reduce-overhead, max, fp8, fp8-torchao"
KNOB_NAMES_HELP = ("channels_last, fuse_qkv, compile_unet, compile_vae, compile_text, fullgraph, vae_upcast, "
                   "vae_slicing, vae_tiling, inductor_tuning, cudnn_benchmark, freezing, fp8_unet, fp8_rowwise, fp8_torchao")
MIN_SIDE_PX, MAX_SIDE_PX = 64, 4096
MAX_STEPS, MAX_BATCH = 1000, 512
DEVICES_HELP = "auto, cpu, cuda, cuda:N, simulated[:v100|a100|h100|h200]"

# The seed's defaults, said in the help (sdbench.cli.args applies them).
DEFAULT_GPU_MODEL = "sd-v1.4"
DEFAULT_CPU_MODEL = "tiny-sd"
DEFAULT_SCHEDULER = "dpm++"


def _model_names() -> list[str]:
    from sdbench.spec.models import MODELS

    return sorted(MODELS)


def _scheduler_names() -> list[str]:
    from sdbench.spec.schedulers import SCHEDULERS

    return sorted(SCHEDULERS)


def _profile_names() -> list[str]:
    from sdbench.spec.profiles import PROFILES

    return sorted(PROFILES)


def _preset_names() -> list[str]:
    from sdbench.spec.presets import PRESET_NAMES

    return list(PRESET_NAMES)


Choices = Sequence[str] | Callable[[], Sequence[str]]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: float) -> str:
    return f"{value:g}"


# --- one row --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One option: what it sets, its check, its flags and its help.

    ``kind`` is ``int``, ``float``, ``str``, ``bool`` (a value, e.g. a RunnerConfig switch), ``flag`` (a
    store-true command-line switch), ``list`` (comma-separated values of a matrix axis, each checked by the
    row ``element``) or ``append`` (a repeatable flag). ``minimum``/``maximum`` are inclusive, ``above`` an
    exclusive lower bound; ``optional`` lets None through. ``default`` is the value when the option is unset
    (``cpu_default``: on the CPU, for RunnerConfig fields); ``flag_default`` what the parsed flag holds when it
    is not given (None for measurement settings: the device's default applies later).
    """

    scope: str  # runner | case | cli | matrix | output | plan | sweep | slurm
    name: str
    kind: str
    help: str = ""
    default: Any = None
    cpu_default: Any = None
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    multiple_of: int | None = None
    choices: Choices | None = None
    pattern: str | None = None
    optional: bool = False
    allowed: str = ""  # what is allowed, in words (default: said from the check)
    cli: tuple[str, ...] = ()
    dest: str | None = None
    pytest: str | None = None
    metavar: str | None = None
    flag_default: Any = None
    argparse_choices: bool = False  # argparse refuses other values itself (its own message lists them)
    element: str | None = None  # list rows: the key of the row that checks each element
    words: tuple[str, ...] = ()  # list rows: words allowed besides elements ('default', 'all', ...)
    separator: str = ","
    hidden: bool = False  # registered but not shown in --help

    @property
    def key(self) -> str:
        """``scope.name``, the row's key in :data:`SETTINGS`."""
        return f"{self.scope}.{self.name}"

    @property
    def attr(self) -> str:
        """The argparse destination of the CLI flag."""
        return self.dest or self.name

    def choice_list(self) -> list[str]:
        """The allowed values of a row with choices (looked up now: some live in heavy modules)."""
        if self.choices is None:
            return []
        return list(self.choices() if callable(self.choices) else self.choices)

    def allowed_text(self) -> str:
        """What is allowed, in words: the row's own text, else said from its check."""
        if self.allowed:
            return self.allowed
        if self.choices is not None:
            return ", ".join(self.choice_list()) + (", or unset" if self.optional else "")
        what = {"int": "a whole number", "float": "a number"}.get(self.kind, "a value")
        if self.unit:
            what += f" of {self.unit}"
        bounds = []
        if self.above is not None:
            bounds.append(f"> {_num(self.above)}")
        if self.minimum is not None and self.maximum is not None:
            text = f"{what} from {_num(self.minimum)} to {_num(self.maximum)}"
        else:
            if self.minimum is not None:
                bounds.append(f">= {_num(self.minimum)}")
            if self.maximum is not None:
                bounds.append(f"<= {_num(self.maximum)}")
            text = " ".join([what, " and ".join(bounds)]).strip()
        if self.multiple_of:
            text = f"{text}, a multiple of {self.multiple_of}"
        return text + (", or unset" if self.optional else "")

    def check(self, value: Any, field_name: str | None = None) -> Any:
        """``value`` if this row allows it, else a ConfigError naming ``field_name`` (default: the row's name)."""
        name = field_name or self.name
        if value is None and (self.optional or self.kind in ("list", "append", "flag")):
            return value
        ok = {"int": _is_int, "float": _is_number, "bool": lambda v: isinstance(v, bool),
              "flag": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str)}.get(self.kind, lambda v: True)
        if not ok(value):
            raise ConfigError(name, value, self.allowed_text())
        if self.kind in ("int", "float"):
            out_of_range = ((self.minimum is not None and value < self.minimum)
                            or (self.maximum is not None and value > self.maximum)
                            or (self.above is not None and value <= self.above)
                            or (self.multiple_of is not None and value % self.multiple_of))
            if out_of_range:
                raise ConfigError(name, value, self.allowed_text())
        if self.choices is not None:
            allowed = self.choice_list()
            if value not in allowed:
                raise ConfigError(name, value, self.allowed_text(), reason=_did_you_mean(value, allowed))
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ConfigError(name, value, self.allowed_text())
        return value

    def convert(self, text: str) -> Any:
        """A command-line word as this row's type (not yet checked); ConfigError if it is not one."""
        if self.kind == "int":
            try:
                return int(text)
            except (TypeError, ValueError):
                raise ConfigError(self.name, text, self.allowed_text()) from None
        if self.kind == "float":
            try:
                value = float(text)
            except (TypeError, ValueError):
                raise ConfigError(self.name, text, self.allowed_text()) from None
            if not math.isfinite(value):
                raise ConfigError(self.name, text, self.allowed_text())
            return value
        return text

    def parse(self, text: str) -> Any:
        """An argparse type: the word converted and checked, or argparse's error naming the field."""
        try:
            return self.check(self.convert(text))
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def parse_number(self, text: str) -> Any:
        """An argparse type that only converts (a Case field's range is checked by the Case, with the same row,
        so every front door names it alike: `generate --benchmark` names the flag)."""
        try:
            return self.convert(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def values(self, text: str | None) -> list[str] | None:
        """A list row's words: ``text`` split on the separator, blanks dropped (None when unset or empty)."""
        if text is None:
            return None
        items = [v.strip() for v in str(text).split(self.separator) if v.strip()]
        return items or None


def _did_you_mean(value: Any, allowed: Iterable[str]) -> str:
    near = close_matches(value, allowed)
    return "did you mean " + " or ".join(repr(n) for n in near) + "?" if near else ""


def close_matches(value: Any, allowed: Iterable[str], n: int = 2) -> list[str]:
    """The allowed names closest to ``value`` (difflib), best first; none when nothing is close."""
    return difflib.get_close_matches(str(value), [str(a) for a in allowed], n=n, cutoff=0.6)


# --- the table ------------------------------------------------------------------------------------------
_R, _C, _X, _M, _O, _P, _S, _L = "runner", "case", "cli", "matrix", "output", "plan", "sweep", "slurm"
_IDENT = r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}"

SETTINGS_ROWS: tuple[Setting, ...] = (
    # How a case is measured: the fields of sdbench.runner.RunnerConfig (GPU defaults, then the CPU's).
    Setting(_R, "energy", "str", "energy source (auto: NVML counter, else power timeline, else none)",
            default="auto", choices=ENERGY_SOURCES, cli=("--energy",), pytest="--sd-energy", flag_default="auto",
            argparse_choices=True),
    Setting(_R, "warmup_calls", "int", "warm-up calls (at least 1)", default=1, minimum=1, unit="calls",
            cli=("--warmup",), dest="warmup", pytest="--sd-warmup"),
    Setting(_R, "warmup_min_s", "float", "keep warming up this long after the first call, s", default=2.0,
            cpu_default=0.0, minimum=0, unit="seconds"),
    Setting(_R, "min_rounds", "int", "fewest measured rounds", default=3, minimum=1, unit="rounds",
            cli=("--min-rounds",), pytest="--sd-min-rounds"),
    Setting(_R, "max_rounds", "int", "most measured rounds", default=30, cpu_default=5, minimum=1, unit="rounds",
            cli=("--max-rounds",), pytest="--sd-max-rounds"),
    Setting(_R, "max_time_s", "float", "time cap for one case's measured rounds, s (default 30 on a GPU; a "
            "multi-case study shares 60 s among its cases, at least 4 s each)", default=30.0, cpu_default=60.0,
            minimum=0, unit="seconds", cli=("--max-time",), dest="max_time", pytest="--sd-max-time"),
    Setting(_R, "target_rel_ci", "float", "stop when the 95%% CI half-width is within this fraction of the median "
            "(time and energy; default 0.02)", default=0.02, cpu_default=0.05, above=0, maximum=1,
            allowed="a fraction > 0 and <= 1, e.g. 0.02", cli=("--target-ci",), dest="target_ci",
            pytest="--sd-target-ci"),
    Setting(_R, "idle_s", "float", "idle-power baseline before each case, s (0: none, and no net energy)",
            default=1.0, cpu_default=0.2, minimum=0, unit="seconds", cli=("--idle-seconds",), dest="idle_seconds",
            pytest="--sd-idle-seconds"),
    Setting(_R, "per_step", "bool", "per-step marks", default=True),
    Setting(_R, "per_phase", "bool", "per-phase marks", default=True),
    Setting(_R, "timeline_hz", "float", "power timeline rate for per-step/phase energy (0: off)", default=100.0,
            minimum=0, unit="hertz"),
    Setting(_R, "telemetry_hz", "float", "telemetry sampling rate (0: off)", default=20.0, minimum=0, unit="hertz"),
    Setting(_R, "min_window_periods", "int", "energy-counter updates per measured window", default=20, minimum=1),
    Setting(_R, "max_calls_per_window", "int", "most pipeline calls in one measured window", default=200, minimum=1),
    Setting(_R, "align_to_counter", "bool", "start windows on an energy-counter update", default=True),
    Setting(_R, "preroll_s", "float", "unmeasured calls before each window of several, s (0: none)", default=0.5,
            minimum=0, unit="seconds"),
    Setting(_R, "count_flops", "bool", "count the work (FLOPs) of each case", default=True),
    Setting(_R, "matmul_ceiling_tflops", "float", "the dense matmul ceiling MFU is taken against (unset: measured)",
            above=0, optional=True, unit="TFLOP/s"),

    # What runs: the fields of sdbench.case.Case, and the CLI's flags for them (generate, quality, sweep, batch).
    Setting(_C, "model", "str", f"model variant (see --list-models); default: {DEFAULT_GPU_MODEL} on a GPU, "
            f"{DEFAULT_CPU_MODEL} (the tiny SD 1.x model) without one", choices=_model_names,
            cli=("--model-variant", "--model"), metavar="NAME"),
    Setting(_C, "scheduler", "str", "sampler (see --list-schedulers); default: the model's own, or "
            f"{DEFAULT_SCHEDULER} (DPM++ multistep, the seed's 'optimized' scheduler) when no --model-variant is "
            "given either", choices=_scheduler_names, cli=("--scheduler",), metavar="KEY"),
    Setting(_C, "steps", "int", "denoising steps (default: the model's)", minimum=1, maximum=MAX_STEPS,
            allowed=f"an integer from 1 to {MAX_STEPS}", cli=("--steps",)),
    Setting(_C, "height", "int", "image height in pixels, multiple of 8", minimum=MIN_SIDE_PX, maximum=MAX_SIDE_PX,
            multiple_of=8, allowed=f"a multiple of 8 from {MIN_SIDE_PX} to {MAX_SIDE_PX}", cli=("--height",)),
    Setting(_C, "width", "int", "image width in pixels, multiple of 8", minimum=MIN_SIDE_PX, maximum=MAX_SIDE_PX,
            multiple_of=8, allowed=f"a multiple of 8 from {MIN_SIDE_PX} to {MAX_SIDE_PX}", cli=("--width",)),
    Setting(_C, "guidance_scale", "float", "CFG scale; 0 or 1 disables CFG (default: the model's, 0 for "
            "turbo/lightning)", minimum=0, maximum=100, allowed="a number from 0 to 100 (0 or 1: no CFG)",
            cli=("--guidance-scale",)),
    Setting(_C, "batch_size", "int", "images per pipeline call", default=1, minimum=1, maximum=MAX_BATCH,
            allowed=f"an integer from 1 to {MAX_BATCH}", cli=("--batch-size",), flag_default=1),
    Setting(_C, "dtype", "str", "weights and activations (default: fp16 on a GPU, fp32 on the CPU)", default="fp16",
            choices=DTYPE_NAMES, allowed="bf16, fp16, fp32", cli=("--dtype",), argparse_choices=True),
    Setting(_C, "profile", "str", f"optimisation profile: {PROFILE_NAMES_HELP} (see docs/optimisation.md)",
            default="eager", choices=_profile_names, cli=("--profile",), flag_default="eager"),
    Setting(_C, "knobs", "str", "knob overrides on the profile, NAME=VALUE separated by commas", default="",
            allowed="name=value pairs separated by commas"),
    Setting(_C, "attention", "str", "attention backend", default="sdpa", choices=ATTENTION_BACKENDS,
            cli=("--attention",), flag_default="sdpa", argparse_choices=True),
    Setting(_C, "offload", "str", "CPU offload of model weights", default="none", choices=OFFLOAD_MODES,
            cli=("--offload",), flag_default="none", argparse_choices=True),
    Setting(_C, "weights", "str", "auto (real weights from the HF cache if present, else synthetic), synthetic, "
            "hub, local:PATH", default="auto", allowed="auto, synthetic, hub, local:PATH", cli=("--weights",),
            flag_default="auto"),
    Setting(_C, "seed", "int", "random seed (default 0)", default=0, minimum=0, allowed="a non-negative integer",
            cli=("--seed",), flag_default=0),
    Setting(_C, "prompt", "str", "text prompt", cli=("--prompt",)),
    Setting(_C, "negative_prompt", "str", "negative prompt (only with CFG)", optional=True,
            cli=("--negative-prompt",)),
    Setting(_C, "device", "str", "auto, cpu, cuda, cuda:N, or simulated[:CARD] (CPU compute, simulated GPU energy)",
            default="cpu", allowed=DEVICES_HELP, cli=("--device",), pytest="--sd-device", flag_default="auto"),
    Setting(_C, "strength", "float", "img2img strength (sdxl-refiner)", above=0, maximum=1, optional=True,
            allowed="a number in (0, 1]", cli=("--strength",)),
    Setting(_C, "timestep_spacing", "str", "override of the model's timestep spacing", optional=True,
            choices=TIMESTEP_SPACINGS, allowed="leading, trailing, linspace"),
    Setting(_C, "sm_clock_mhz", "int", "requested SM clock lock (unset: the card as found)", above=0, optional=True,
            allowed="a positive integer, or unset for the card as found", unit="MHz"),
    Setting(_C, "mem_clock_mhz", "int", "requested memory clock lock", above=0, optional=True,
            allowed="a positive integer, or unset for the card as found", unit="MHz"),
    Setting(_C, "power_limit_w", "int", "requested power limit", above=0, optional=True,
            allowed="a positive integer, or unset for the card as found", unit="W"),
    Setting(_C, "tags", "list", "free labels carried into the record", default=()),

    # Command-line conveniences that feed a Case field (knobs, offload, a published workload's settings).
    Setting(_X, "preset", "str", "a published workload's settings for every case field not set by a flag: "
            "mlperf-sdxl (MLPerf Inference text-to-image: sdxl 1024x1024, 20 steps euler, guidance 8, its negative "
            "prompt); speed and energy only, no accuracy claim", choices=_preset_names, cli=("--preset",),
            metavar="NAME"),
    Setting(_X, "knob", "append", f"override one knob of the profile (repeatable): {KNOB_NAMES_HELP}",
            cli=("--knob",), metavar="NAME=VALUE", flag_default=[]),
    Setting(_X, "compile_mode", "str", "torch.compile the UNet in this mode (default, reduce-overhead, max-autotune, "
            "max-autotune-no-cudagraphs, none)", cli=("--compile-mode",), metavar="MODE"),
    Setting(_X, "channels_last", "flag", "channels_last memory format for UNet and VAE", cli=("--channels-last",)),
    Setting(_X, "vae_slicing", "flag", "decode the batch one image at a time", cli=("--vae-slicing",)),
    Setting(_X, "vae_tiling", "flag", "decode in tiles (large images in less memory)", cli=("--vae-tiling",)),
    Setting(_X, "enable_cpu_offload", "flag", "same as --offload model", cli=("--enable-cpu-offload",)),

    # The case matrix (pytest's --sd-*; `sdbench bench` and `sdbench plan make`): comma-separated values per axis.
    Setting(_M, "models", "list", "comma-separated model variants (see `sdbench models`; unset: the default "
            "matrix's, tiny models without a GPU)", element="case.model", cli=("--models",), pytest="--sd-models"),
    Setting(_M, "schedulers", "list", "comma-separated scheduler keys, 'default' (the model's) or 'all'",
            element="case.scheduler", words=("default", "all"), cli=("--schedulers",), pytest="--sd-schedulers"),
    Setting(_M, "resolutions", "list", "comma-separated square sides in px, 'default' or xF (F times the model's "
            "side)", element="case.height", words=("default",), cli=("--resolutions",), pytest="--sd-resolutions"),
    Setting(_M, "batch_sizes", "list", "comma-separated batch sizes", element="case.batch_size",
            cli=("--batch-sizes",), pytest="--sd-batch-sizes"),
    Setting(_M, "steps", "list", "comma-separated step counts, or 'default' (the model's)", element="case.steps",
            words=("default",), cli=("--steps",), pytest="--sd-steps"),
    Setting(_M, "dtypes", "list", "comma-separated dtypes: fp16, bf16, fp32 (default: fp16 on a GPU, fp32 on the "
            "CPU)", element="case.dtype", words=("default",), cli=("--dtypes",), pytest="--sd-dtypes"),
    Setting(_M, "profiles", "list", f"comma-separated optimisation profiles ({PROFILE_NAMES_HELP})",
            element="case.profile", cli=("--profiles",), pytest="--sd-profiles"),
    Setting(_M, "attention", "list", "comma-separated attention backends", element="case.attention",
            pytest="--sd-attention"),
    Setting(_M, "knobs", "list", "knob overrides applied to every case, e.g. 'channels_last=on;compile_unet="
            "max-autotune' (';' separates knobs here)", element="case.knobs", separator="\n", pytest="--sd-knobs"),
    Setting(_M, "weights", "list", "comma-separated weight sources: auto, synthetic, hub or local:PATH",
            element="case.weights", cli=("--weights",), pytest="--sd-weights"),
    Setting(_M, "shard", "str", "run only every N-th sdbench case starting at I (one worker per GPU: "
            "`sdbench bench --gpus`)", allowed="I/N with 0 <= I < N, e.g. 0/4", pattern=r"\d+/\d+",
            pytest="--sd-shard", metavar="I/N"),

    # Where a suite's results go (`sdbench bench` and the plugin) and the quality suite's images per case.
    Setting(_O, "results_dir", "str", "the run's results folder: records.jsonl, benchmark.json (pytest-benchmark's "
            "JSON), summary.md (default: sdbench-results/<time>-<suites> in the current directory, made at the "
            "first record)", cli=("--output-dir",), dest="output_dir", pytest="--sd-results-dir", metavar="DIR"),
    Setting(_O, "no_results_dir", "flag", "write no results folder", cli=("--no-output-dir",), dest="no_output_dir",
            pytest="--sd-no-results-dir"),
    Setting(_O, "export", "str", "also write every record into one JSON document (generate's --export-metrics "
            "format)",
            cli=("--export-metrics",), dest="export_metrics", pytest="--sd-export", metavar="FILE"),
    Setting(_O, "results", "str", "also append every record to this JSON Lines file", cli=("--results",),
            pytest="--sd-results", metavar="FILE"),
    Setting(_O, "num_images", "int", "images per case, one seed each: the images generate saves, and the images "
            "the quality_test suite compares per case (default 1)", default=1, minimum=1, cli=("--num-images",),
            pytest="--sd-num-images", metavar="N", flag_default=1),
    Setting(_O, "no_progress", "flag", "no live progress line per case", pytest="--sd-no-progress"),
    Setting(_O, "caller_prints_next", "flag", "`sdbench bench` prints the status, folder and next steps itself",
            pytest="--sd-caller-prints-next", hidden=True),
    Setting(_O, "compare", "str", "at the end, compare this run with a saved pytest-benchmark JSON or sdbench "
            "results file", pytest="--sd-compare", metavar="BASELINE"),
    Setting(_O, "compare_fail", "str", "with --sd-compare: fail the run on a significant regression, e.g. "
            "time:5%%,energy:5%%", pytest="--sd-compare-fail", metavar="SPEC"),
    Setting(_O, "allow_cross_gpu", "flag", "allow comparing histories of different GPUs or clock settings",
            pytest="--sd-allow-cross-gpu"),
    Setting(_O, "no_storage_split", "flag", "keep pytest-benchmark histories in --benchmark-storage as given (no "
            "per-GPU/clock root)", pytest="--sd-no-storage-split"),

    # Plans.
    Setting(_P, "repeats", "int", "repetitions of every case", default=1, minimum=1, cli=("--repeats",),
            flag_default=1),

    # Sweeps (sdbench.studies.dvfs.options.SweepOptions; the flags are `sdbench sweep`'s).
    Setting(_S, "profiling_mode", "str", "", default="dvfs", choices=("baseline", "dvfs", "custom"),
            cli=("--profiling-mode",)),
    Setting(_S, "gpu_type", "str", "", optional=True, choices=("A100", "H100", "V100"), cli=("--gpu-type",)),
    Setting(_S, "repeats", "int", "", default=1, minimum=1, cli=("--repeats",)),
    Setting(_S, "order", "str", "", default="random", choices=("random", "interleaved", "descending"),
            cli=("--order",)),
    Setting(_S, "order_seed", "int", "", optional=True, cli=("--order-seed",)),
    Setting(_S, "default_every", "int", "", default=5, minimum=0, cli=("--default-every",)),
    Setting(_S, "cooldown_c", "float", "", default=5.0, minimum=0, optional=True,
            allowed="degrees Celsius >= 0, or None for no cooldown", cli=("--cooldown-c",)),
    Setting(_S, "cooldown_timeout_s", "float", "", default=120.0, minimum=0, allowed="a number of seconds >= 0",
            cli=("--cooldown-timeout-s",)),
    Setting(_S, "idle_gap_s", "float", "", default=2.0, minimum=0, allowed="a number of seconds >= 0",
            cli=("--idle-gap-s",)),
    Setting(_S, "activity", "str", "", default="auto", choices=("auto", "simulated", "pydcgm", "dcgmi", "none"),
            cli=("--activity",)),
    Setting(_S, "retries", "int", "", default=1, minimum=0, allowed="a whole number >= 0", cli=("--retries",)),

    # SLURM job scripts: only values that pass these checks are written into a script (sdbench.distribute.slurm).
    Setting(_L, "partition", "str", "", pattern=rf"{_IDENT}(,{_IDENT})*",
            allowed="a partition name (letters, digits, _ . + -), or several separated by commas", cli=("--partition",)),
    Setting(_L, "account", "str", "", pattern=_IDENT, allowed="an account name (letters, digits, _ . + -)",
            cli=("--account",)),
    Setting(_L, "qos", "str", "", pattern=_IDENT, allowed="a QOS name (letters, digits, _ . + -)", cli=("--qos",)),
    Setting(_L, "job_name", "str", "", pattern=r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}",
            allowed="letters, digits, _ . + - (at most 64)", cli=("--job-name",)),
    Setting(_L, "time", "str", "", pattern=r"\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2}",
            allowed="minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS", cli=("--time",)),
    Setting(_L, "gres", "str", "", pattern=r"[A-Za-z]+(:[A-Za-z0-9_.-]+)?:\d+(,[A-Za-z]+(:[A-Za-z0-9_.-]+)?:\d+)*",
            allowed="NAME[:TYPE]:COUNT[,...], e.g. gpu:1 or gpu:a100:2", cli=("--gres",)),
    Setting(_L, "gpus_per_node", "str", "", pattern=r"([A-Za-z0-9_.-]+:)?\d+", allowed="[TYPE:]COUNT, e.g. 4 or h100:4",
            cli=("--gpus-per-node",)),
    Setting(_L, "mem", "str", "", pattern=r"\d+[KMGT]?", allowed="a size such as 64G or 16000 (megabytes)",
            cli=("--mem",)),
    Setting(_L, "module", "str", "", pattern=r"[A-Za-z0-9_][A-Za-z0-9_.+/-]*",
            allowed="a module name such as cuda/12.4 (letters, digits, _ . + - /)", cli=("--module",)),
    Setting(_L, "conda", "str", "", pattern=_IDENT,
            allowed="a conda environment name (letters, digits, _ . + -) or an absolute prefix path", cli=("--conda",)),
    Setting(_L, "array", "str", "", pattern=r"\d+(-\d+)?(,\d+(-\d+)?)*(%\d+)?",
            allowed="task ids such as 0-7, 1,3 or 0-7%2", cli=("--array",)),
    Setting(_L, "cpus_per_task", "int", "", minimum=1, optional=True, allowed="a whole number >= 1",
            cli=("--cpus-per-task",)),
    Setting(_L, "array_size", "int", "", minimum=1, optional=True, allowed="a whole number >= 1", cli=("--array-size",)),
    Setting(_L, "max_parallel", "int", "", minimum=1, optional=True, allowed="a whole number >= 1",
            cli=("--max-parallel",)),
)

#: The measurement settings every front door takes (`--max-time` / `--sd-max-time`, ...), in --help order.
MEASUREMENT_KEYS: tuple[str, ...] = ("runner.energy", "runner.warmup_calls", "runner.min_rounds", "runner.max_rounds",
                                     "runner.max_time_s", "runner.target_rel_ci", "runner.idle_s")
#: The matrix axes `sdbench plan make` and `sdbench bench` take (`--models`, ...; the plugin's `--sd-models`, ...).
PLAN_AXES: tuple[str, ...] = ("matrix.models", "matrix.schedulers", "matrix.resolutions", "matrix.batch_sizes",
                              "matrix.steps", "matrix.dtypes", "matrix.profiles", "matrix.weights")

#: Every row by its key (``scope.name``).
SETTINGS: Mapping[str, Setting] = {s.key: s for s in SETTINGS_ROWS}
if len(SETTINGS) != len(SETTINGS_ROWS):  # a repeated key would silently hide a row
    raise RuntimeError("sdbench.settings: two rows share a key")


def get(key: str) -> Setting:
    """The row ``key`` (``scope.name``)."""
    return SETTINGS[key]


def in_scope(scope: str) -> list[Setting]:
    """The rows of one scope, in table order."""
    return [s for s in SETTINGS_ROWS if s.scope == scope]


def default_of(key: str) -> Any:
    """The default of row ``key`` (what a dataclass field defaults to)."""
    return SETTINGS[key].default


def runner_defaults(cpu: bool = False) -> dict[str, Any]:
    """RunnerConfig's defaults: a GPU's, or with ``cpu`` the shorter CPU ones."""
    out = {}
    for s in in_scope(_R):
        out[s.name] = s.cpu_default if cpu and s.cpu_default is not None else s.default
    return out


def check(key: str, value: Any, field_name: str | None = None) -> Any:
    """``value`` if row ``key`` allows it, else a ConfigError naming the field, the value and what is allowed."""
    return SETTINGS[key].check(value, field_name)


# --- keys of documents (plans) ----------------------------------------------------------------------------
def check_keys(what: str, keys: Iterable[str], allowed: Iterable[str], where: str = "") -> None:
    """Refuse the first key of ``keys`` not in ``allowed``, naming its close matches ('did you mean ...?')."""
    allowed = list(allowed)
    for key in keys:
        if key not in allowed:
            near = _did_you_mean(key, allowed)
            reason = "; ".join(p for p in (where, near) if p)
            raise ConfigError(what, key, sorted(allowed), reason=reason)


# --- RunnerConfig ---------------------------------------------------------------------------------------
def check_runner(config: Any) -> None:
    """Check every field of a RunnerConfig (or a mapping of them) against its row, and that the round limits
    agree; a ConfigError names the field, the value and its allowed range."""
    values = config if isinstance(config, Mapping) else {s.name: getattr(config, s.name) for s in in_scope(_R)}
    check_keys("runner setting", values, [s.name for s in in_scope(_R)])
    for name, value in values.items():
        SETTINGS[f"{_R}.{name}"].check(value)
    lo, hi = values.get("min_rounds"), values.get("max_rounds")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError("min_rounds", lo, f"<= max_rounds ({hi})")


# --- matrix axes ----------------------------------------------------------------------------------------
def check_axis(name: str, text: str | None, field_name: str | None = None) -> list[str] | None:
    """Check each value of matrix axis ``name`` (its comma-separated words) on its own; returns the words.

    Combinations (a distilled model's step counts, a profile on a card) are the cases' to check."""
    row = SETTINGS[f"{_M}.{name}"]
    words = row.values(text)
    if words is None:
        return None
    label = field_name or name
    element = SETTINGS[row.element] if row.element else None
    for word in words:
        if word in row.words or element is None:
            continue
        if name == "resolutions" and word.startswith("x"):
            try:
                factor = float(word[1:])
            except ValueError:
                factor = float("nan")
            if not (math.isfinite(factor) and factor > 0):
                raise ConfigError(label, word, "px, 'default' or xF (e.g. x1.5)")
            continue
        if name == "weights":
            _check_weights(word, label)
            continue
        if name == "knobs":
            from sdbench.spec.profiles import canonical_knobs

            canonical_knobs(word.replace(";", ","))
            continue
        try:
            value = element.convert(word)
        except ConfigError:
            raise ConfigError(label, word, element.allowed_text() + (
                f" or {', '.join(repr(w) for w in row.words)}" if row.words else "")) from None
        element.check(value, label)
    return words


def _check_weights(word: str, label: str) -> None:
    from sdbench.spec.weights import WeightSource  # imports torch: only when weights are given

    try:
        WeightSource.parse(word)
    except ConfigError as exc:
        if exc.field != "weights":
            raise
        raise ConfigError(label, exc.value, exc.allowed, exc.reason) from None


# --- generating argparse arguments and pytest options -------------------------------------------------------
def _argparse_kwargs(row: Setting, *, for_pytest: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"help": argparse.SUPPRESS if row.hidden else row.help}
    if row.kind == "flag":
        kwargs["action"] = "store_true"
        return kwargs
    if row.kind == "append":
        kwargs.update(action="append", default=list(row.flag_default or []))
    else:
        kwargs["default"] = row.flag_default
    if row.metavar:
        kwargs["metavar"] = row.metavar
    if row.argparse_choices and not for_pytest:
        kwargs["choices"] = row.choice_list()
    elif row.kind in ("int", "float") and not for_pytest:
        kwargs["type"] = row.parse_number if row.scope == _C else row.parse
    return kwargs


def add_arguments(parser: Any, keys: Iterable[str], **overrides: Any) -> None:
    """Add the CLI flags of rows ``keys`` to an argparse parser or group (``overrides``: per-flag keyword
    arguments by key, e.g. ``{"plan.repeats": {"help": ...}}``)."""
    for key in keys:
        row = SETTINGS[key]
        if not row.cli:
            raise ValueError(f"{key} has no command-line flag")
        kwargs = {"dest": row.attr, **_argparse_kwargs(row, for_pytest=False), **overrides.get(key, {})}
        parser.add_argument(*row.cli, **kwargs)


def add_pytest_options(addoption: Callable[..., Any], keys: Iterable[str]) -> None:
    """Add the pytest options of rows ``keys`` through ``addoption`` (a pytest option group's).

    Values arrive as text and are checked at configure time by :func:`pytest_values`, so a bad value is one
    usage-error line (exit 4) before any folder is made, never argparse's usage dump."""
    for key in keys:
        row = SETTINGS[key]
        if row.pytest is None:
            raise ValueError(f"{key} has no pytest option")
        addoption(row.pytest, **_argparse_kwargs(row, for_pytest=True))


class OptionError(ConfigError):
    """A bad value of one named option: the option first, then what is wrong with the value (its row's words)."""

    def __init__(self, option: str, cause: ConfigError) -> None:
        super().__init__(cause.field, cause.value, cause.allowed, cause.reason)
        self.option = option
        self.args = (f"{option}: {cause}",)

    def __str__(self) -> str:
        return str(self.args[0])


def pytest_values(getoption: Callable[[str], Any], keys: Iterable[str]) -> dict[str, Any]:
    """The checked values of rows ``keys``' pytest options, by option name; :class:`OptionError` names the option.

    Numbers arrive as text and are converted; list rows (matrix axes) keep their text, each word checked."""
    out: dict[str, Any] = {}
    for key in keys:
        row = SETTINGS[key]
        assert row.pytest is not None
        raw = getoption(row.pytest)
        try:
            if raw is None or row.kind == "flag":
                out[row.pytest] = raw
            elif row.kind == "list":
                check_axis(row.name, raw)
                out[row.pytest] = raw
            else:
                out[row.pytest] = row.check(row.convert(raw) if isinstance(raw, str) else raw)
        except ConfigError as exc:
            raise OptionError(row.pytest, exc) from None
    return out


def flag_of(key: str) -> str:
    """The CLI flag of row ``key`` (its first)."""
    return SETTINGS[key].cli[0]
