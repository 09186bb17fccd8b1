"""Power-model features and fits: the table DVFS power models are trained on, two models, and their
error on clocks they never saw.

Feature table (one row per measured record; CSV and Parquet): the seed's features (denoising steps,
resolution in pixels, batch size, scheduler, model variant, attention backend) plus dtype and
optimisation profile, the SM and memory clocks (requested setting, telemetry mean, and the
effective value used for fitting), the power limit, the measured metrics (power, time, energy and
net energy per image) and DCGM-style activity fractions when the records carry them.

Models, both fitted in log space (power and runtime are multiplicative in clock and workload):

(a) FGCS-2023-style log-linear models.
    Power:   ``log P = a + b log f + c fp_activity + d dram_activity`` (+ log memory clock and log
    power limit when they vary). Without activity counters, the activity terms are replaced by
    workload features (log pixels, log steps, log batch, one-hot model/scheduler/attention/...).
    Runtime: ``log t = poly2(log f, fp_activity) + workload features``; the FGCS form is a polynomial
    in fp activity and log f for one workload, and the workload terms let one fit span several.
    ``fp_activity`` is the sum of the floating-point pipe fractions present (tensor, fp16, fp32,
    fp64): the fraction of cycles some FP pipe is busy, to first order.

(b) One non-linear learner: kernel ridge regression with an RBF + linear kernel on standardised
    features, hyper-parameters chosen by an inner leave-clocks-out cross-validation on the training
    clocks only. Why this learner: a sweep has tens of clock points, and held-out clocks lie *between*
    (or just beyond) trained ones. Tree ensembles predict piecewise-constant values, so a held-out
    clock gets its neighbour's value; k-NN does the same. A smooth kernel interpolates, and the linear
    kernel term keeps predictions sane just outside the trained range, where a pure RBF would fall back
    to the mean. It is a few lines of numpy (no scikit-learn dependency) and exact for the data sizes
    of a sweep (O(n^3) in rows; hundreds of rows take milliseconds).

Validation is leave-clocks-out: the distinct clock settings are sorted and dealt into folds
round-robin (so each fold's clocks are spread over the range), each fold is predicted by models fitted
on the others, and MAPE (%) and RMSE (W, s) are reported per model and target over all held-out rows.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdbench.analysis.dvfs.records import (
    SETTING_FIELDS,
    _num,
    is_default_record,
    record_is_simulated,
    record_settings,
)
from sdbench.errors import ConfigError, SdbenchError
from sdbench.record.io import json_safe
from sdbench.record.schema import metric_stats

#: Columns of the feature table, in order. ``sm_clock_mhz`` (and ``mem_clock_mhz``) is the effective
#: clock used for fitting: the telemetry mean when recorded, else the requested setting.
FEATURE_COLUMNS: tuple[str, ...] = (
    "point_id", "case_id", "model", "scheduler", "attention", "dtype", "profile",
    "steps", "width", "height", "pixels", "batch_size",
    "sm_clock_mhz_setting", "mem_clock_mhz_setting", "power_limit_w_setting", "is_default_clock",
    "sm_clock_mhz_measured", "mem_clock_mhz_measured", "sm_clock_mhz", "mem_clock_mhz", "power_limit_w",
    "clock_verified",
    "power_w", "time_per_image_s", "energy_per_image_j", "net_energy_per_image_j", "images_per_s",
    "activity_sm", "activity_tensor", "activity_dram", "activity_fp16", "activity_fp32", "activity_fp64",
    "fp_activity", "dram_activity",
    "simulated",
)
_STRING_COLUMNS = frozenset({"point_id", "case_id", "model", "scheduler", "attention", "dtype", "profile",
                             "clock_verified"})
_BOOL_COLUMNS = frozenset({"is_default_clock", "simulated"})
CATEGORICAL_FEATURES: tuple[str, ...] = ("model", "scheduler", "attention", "dtype", "profile")
_ACTIVITY_KINDS: tuple[str, ...] = ("tensor", "dram", "fp16", "fp32", "fp64", "sm")
_FP_KINDS: tuple[str, ...] = ("tensor", "fp16", "fp32", "fp64")


# --- the feature table -----------------------------------------------------------------------------
def _metric(rec: Mapping[str, Any], name: str) -> float | None:
    """Mean of the per-round samples (as the analysis uses), else the record's mean, else its estimate
    (:func:`sdbench.record.schema.metric_stats`)."""
    m = metric_stats(rec, name)
    if m is None:
        return None
    return float(np.mean(m.samples)) if m.samples is not None else m.mean_value


def _activities(rec: Mapping[str, Any]) -> dict[str, float]:
    """Activity fractions by kind from ``activity_*`` fields (the window mean when several stats exist)."""
    found: dict[str, tuple[int, float]] = {}
    for key, value in rec.items():
        if not key.startswith("activity_"):
            continue
        v = _num(value)
        if v is None:
            continue
        rest = key[len("activity_"):]
        if any(rest.endswith(s) for s in ("_min", "_max", "_std", "_stddev", "_n")):
            continue
        tokens = rest.split("_")
        for kind in _ACTIVITY_KINDS:
            if kind in tokens:
                # Prefer the plain or "_mean" field over anything else with the same kind.
                rank = 0 if rest in (kind, f"{kind}_active", f"{kind}_mean", f"{kind}_active_mean") else 1
                if kind not in found or rank < found[kind][0]:
                    found[kind] = (rank, v)
                break
    return {k: v for k, (_, v) in found.items()}


def feature_rows(records: Iterable[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One feature row per successfully measured record (see :data:`FEATURE_COLUMNS`)."""
    rows: list[dict[str, Any]] = []
    for rec in records:
        if rec.get("record_type") not in (None, "case") or rec.get("point_status") not in (None, "ok"):
            continue
        t = _metric(rec, "time_per_image_s")
        if t is None:
            continue
        settings = record_settings(rec)
        sm_measured = _num(rec.get("telemetry_sm_clock_mhz_mean"))
        mem_measured = _num(rec.get("telemetry_mem_clock_mhz_mean"))
        sm = sm_measured if sm_measured is not None else settings["sm_clock_mhz"]
        if sm is None:
            # The default clock without telemetry: the card's default (boost) clock from the environment.
            sm = _num(rec.get("env_gpu_default_sm_clock_mhz")) or _num(rec.get("env_gpu_max_sm_clock_mhz"))
        mem = mem_measured if mem_measured is not None else settings["mem_clock_mhz"]
        limit = settings["power_limit_w"]
        if limit is None:
            limit = _num(rec.get("telemetry_power_limit_w")) or _num(rec.get("env_gpu_power_limit_w"))
        energy = _metric(rec, "energy_per_image_j")
        power = _metric(rec, "power_w")
        if power is None and energy is not None and t > 0:
            power = energy / t
        act = _activities(rec)
        fp = sum(act[k] for k in _FP_KINDS if k in act) if any(k in act for k in _FP_KINDS) else None
        width, height = _num(rec.get("width")), _num(rec.get("height"))
        pixels = _num(rec.get("pixels")) or (width * height if width and height else None)
        row: dict[str, Any] = {
            "point_id": rec.get("point_id"), "case_id": rec.get("case_id"),
            "model": rec.get("model"), "scheduler": rec.get("scheduler"), "attention": rec.get("attention"),
            "dtype": rec.get("dtype"), "profile": rec.get("profile"),
            "steps": _num(rec.get("steps")), "width": width, "height": height, "pixels": pixels,
            "batch_size": _num(rec.get("batch_size")),
            "sm_clock_mhz_setting": settings["sm_clock_mhz"], "mem_clock_mhz_setting": settings["mem_clock_mhz"],
            "power_limit_w_setting": settings["power_limit_w"], "is_default_clock": is_default_record(rec),
            "sm_clock_mhz_measured": sm_measured, "mem_clock_mhz_measured": mem_measured,
            "sm_clock_mhz": sm, "mem_clock_mhz": mem, "power_limit_w": limit,
            "clock_verified": rec.get("clock_verified"),
            "power_w": power, "time_per_image_s": t, "energy_per_image_j": energy,
            "net_energy_per_image_j": _metric(rec, "net_energy_per_image_j"),
            "images_per_s": 1.0 / t if t > 0 else None,
            **{f"activity_{k}": act.get(k) for k in _ACTIVITY_KINDS},
            "fp_activity": fp, "dram_activity": act.get("dram"),
            "simulated": record_is_simulated(rec, meta),
        }
        rows.append({c: row.get(c) for c in FEATURE_COLUMNS})
    return rows


def write_features(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str],
                   stem: str = "powermodel-features") -> dict[str, Any]:
    """Write the feature table as ``{stem}.csv`` and ``{stem}.parquet``.

    Returns ``{"csv": Path, "parquet": Path | None, "parquet_reason": str | None}``; Parquet needs
    pyarrow, and its absence is reported rather than failing the report.
    """
    from sdbench.record.io import write_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv([dict(r) for r in rows], out / f"{stem}.csv")
    result: dict[str, Any] = {"csv": csv_path, "parquet": None, "parquet_reason": None}
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        result["parquet_reason"] = f"pyarrow is not installed ({exc}); install sdbench[test] or pyarrow"
        return result
    fields = []
    for col in FEATURE_COLUMNS:
        typ = pa.string() if col in _STRING_COLUMNS else pa.bool_() if col in _BOOL_COLUMNS else pa.float64()
        fields.append(pa.field(col, typ))
    schema = pa.schema(fields)
    columns: dict[str, list[Any]] = {c: [] for c in FEATURE_COLUMNS}
    for r in rows:
        for c in FEATURE_COLUMNS:
            v = r.get(c)
            if v is not None and c in _STRING_COLUMNS:
                v = str(v)
            elif v is not None and c not in _BOOL_COLUMNS:
                v = float(v)
            columns[c].append(v)
    table = pa.Table.from_pydict(columns, schema=schema)
    pq_path = out / f"{stem}.parquet"
    pq.write_table(table, pq_path)
    result["parquet"] = pq_path
    return result


# --- design matrices ---------------------------------------------------------------------------------
def _log(v: Any) -> float:
    x = _num(v)
    return math.log(x) if x is not None and x > 0 else math.nan


def _val(v: Any) -> float:
    x = _num(v)
    return math.nan if x is None else x


#: Named numeric terms: how each is computed from a feature row.
TERMS: dict[str, Callable[[Mapping[str, Any]], float]] = {
    "log_sm_clock_mhz": lambda r: _log(r.get("sm_clock_mhz")),
    "log_sm_clock_mhz^2": lambda r: _log(r.get("sm_clock_mhz")) ** 2,
    "fp_activity": lambda r: _val(r.get("fp_activity")),
    "fp_activity^2": lambda r: _val(r.get("fp_activity")) ** 2,
    "fp_activity*log_sm_clock_mhz": lambda r: _val(r.get("fp_activity")) * _log(r.get("sm_clock_mhz")),
    "dram_activity": lambda r: _val(r.get("dram_activity")),
    "activity_sm": lambda r: _val(r.get("activity_sm")),
    "activity_tensor": lambda r: _val(r.get("activity_tensor")),
    "activity_fp16": lambda r: _val(r.get("activity_fp16")),
    "log_mem_clock_mhz": lambda r: _log(r.get("mem_clock_mhz")),
    "log_power_limit_w": lambda r: _log(r.get("power_limit_w")),
    "log_pixels": lambda r: _log(r.get("pixels")),
    "log_steps": lambda r: _log(r.get("steps")),
    "log_batch_size": lambda r: _log(r.get("batch_size")),
}
_CLOCK_TERMS = ("log_mem_clock_mhz", "log_power_limit_w")
#: Fewest distinct SM clocks for the runtime model's quadratic terms (else it is linear in log f).
MIN_CLOCKS_FOR_QUADRATIC = 5
_WORKLOAD_TERMS = ("log_pixels", "log_steps", "log_batch_size")


def has_activity(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every row carries fp and DRAM activity (the FGCS power model's inputs)."""
    return bool(rows) and all(_num(r.get("fp_activity")) is not None and _num(r.get("dram_activity")) is not None
                              for r in rows)


@dataclass
class Design:
    """Columns of a design matrix, frozen on the training rows (constant columns are dropped)."""

    terms: list[str]
    categories: dict[str, list[str]]
    drop_first: bool = True

    @classmethod
    def build(cls, rows: Sequence[Mapping[str, Any]], terms: Sequence[str], categorical: Sequence[str],
              drop_first: bool = True) -> Design:
        kept = []
        for name in terms:
            vals = np.array([TERMS[name](r) for r in rows])
            # A column that is missing somewhere or constant cannot be estimated (constant = intercept).
            if np.all(np.isfinite(vals)) and np.ptp(vals) > 1e-12 * max(1.0, float(np.max(np.abs(vals)))):
                kept.append(name)
        cats: dict[str, list[str]] = {}
        for name in categorical:
            levels = sorted({str(r.get(name)) for r in rows})
            if len(levels) > 1:
                cats[name] = levels
        return cls(kept, cats, drop_first)

    @property
    def names(self) -> list[str]:
        out = list(self.terms)
        for name, levels in self.categories.items():
            out += [f"{name}={lv}" for lv in (levels[1:] if self.drop_first else levels)]
        return out

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        cols = [np.array([TERMS[t](r) for r in rows], dtype=float) for t in self.terms]
        for name, levels in self.categories.items():
            vals = [str(r.get(name)) for r in rows]
            # An unseen level is all zeros: the baseline level, the least-bad guess.
            cols += [np.array([1.0 if v == lv else 0.0 for v in vals]) for lv in
                     (levels[1:] if self.drop_first else levels)]
        if not cols:
            return np.zeros((len(rows), 0))
        return np.column_stack(cols)


# --- model (a): log-linear least squares ------------------------------------------------------------
@dataclass
class LogLinearModel:
    """``log(target) = intercept + sum(coef * term)`` fitted by least squares."""

    target: str
    form: str
    design: Design
    intercept: float = 0.0
    coefficients: dict[str, float] = field(default_factory=dict)
    r2_log: float | None = None
    n_train: int = 0
    rank_deficient: bool = False

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> LogLinearModel:
        x = self.design.matrix(rows)
        y = np.log(np.array([_val(r.get(self.target)) for r in rows]))
        a = np.column_stack([np.ones(len(rows)), x])
        coef, _, rank, _ = np.linalg.lstsq(a, y, rcond=None)
        self.rank_deficient = bool(rank < a.shape[1])
        self.intercept = float(coef[0])
        self.coefficients = {n: float(c) for n, c in zip(self.design.names, coef[1:])}
        pred = a @ coef
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        self.r2_log = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else None
        self.n_train = len(rows)
        return self

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        x = self.design.matrix(rows)
        coef = np.array([self.coefficients[n] for n in self.design.names])
        return np.exp(self.intercept + (x @ coef if coef.size else 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "form": self.form, "intercept": self.intercept,
                "coefficients": self.coefficients, "features": self.design.names, "r2_log": self.r2_log,
                "n_train": self.n_train, "rank_deficient": self.rank_deficient}


def power_terms(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], str]:
    """Terms, categorical features and a readable form of the FGCS-style power model for these rows."""
    if has_activity(rows):
        terms = ["log_sm_clock_mhz", "fp_activity", "dram_activity", *_CLOCK_TERMS]
        return terms, [], "log(P_W) = a + b*log(f_MHz) + c*fp_activity + d*dram_activity (+ log f_mem, log P_limit)"
    terms = ["log_sm_clock_mhz", *_CLOCK_TERMS, *_WORKLOAD_TERMS]
    return (terms, list(CATEGORICAL_FEATURES),
            "log(P_W) = a + b*log(f_MHz) + workload terms (no activity counters recorded)")


def runtime_terms(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], str]:
    """Terms of the runtime model: quadratic in log f (and fp activity when present) plus workload."""
    clocks = {round(_val(r.get("sm_clock_mhz"))) for r in rows if math.isfinite(_val(r.get("sm_clock_mhz")))}
    # A quadratic through few clocks fits them exactly and extrapolates wildly to a held-out clock;
    # below MIN_CLOCKS_FOR_QUADRATIC distinct clocks the polynomial is linear.
    degree = 2 if len(clocks) >= MIN_CLOCKS_FOR_QUADRATIC else 1
    terms = ["log_sm_clock_mhz"] + (["log_sm_clock_mhz^2"] if degree == 2 else [])
    form = f"log(t_s) = poly{degree}(log f_MHz"
    if has_activity(rows):
        terms += ["fp_activity"] + (["fp_activity^2", "fp_activity*log_sm_clock_mhz"] if degree == 2 else [])
        form += ", fp_activity"
    terms += [*_CLOCK_TERMS, *_WORKLOAD_TERMS]
    return terms, list(CATEGORICAL_FEATURES), form + ") + workload terms"


def fit_loglinear(rows: Sequence[Mapping[str, Any]], target: str) -> LogLinearModel:
    """Fit the FGCS-style model of ``target`` (``"power_w"`` or ``"time_per_image_s"``)."""
    if target not in _TARGETS:
        raise ConfigError("target", target, allowed=_TARGETS)
    terms, cats, form = power_terms(rows) if target == "power_w" else runtime_terms(rows)
    design = Design.build(rows, terms, cats)
    return LogLinearModel(target=target, form=form, design=design).fit(rows)


# --- model (b): kernel ridge regression --------------------------------------------------------------
_KRR_TERMS = ("log_sm_clock_mhz", "fp_activity", "dram_activity", "activity_sm", "activity_tensor", "activity_fp16",
              *_CLOCK_TERMS, *_WORKLOAD_TERMS)
_KRR_LENGTH_FACTORS = (0.5, 1.0, 2.0, 4.0)
_KRR_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class KernelRidgeModel:
    """Kernel ridge regression of ``log(target)``: kernel ``exp(-|a-b|^2 / (2 l^2)) + a.b`` on
    standardised features; ``length_scale`` and ``alpha`` (ridge) chosen by inner leave-clocks-out CV."""

    target: str
    design: Design
    length_scale: float = 1.0
    alpha: float = 1e-2
    n_train: int = 0
    _mu: np.ndarray | None = None
    _sd: np.ndarray | None = None
    _x: np.ndarray | None = None
    _dual: np.ndarray | None = None
    _y_mean: float = 0.0

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sq = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * a @ b.T
        return np.exp(-np.maximum(sq, 0.0) / (2.0 * self.length_scale ** 2)) + a @ b.T

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> KernelRidgeModel:
        x = self.design.matrix(rows)
        y = np.log(np.array([_val(r.get(self.target)) for r in rows]))
        self._mu = x.mean(axis=0) if x.size else np.zeros(x.shape[1])
        sd = x.std(axis=0) if x.size else np.ones(x.shape[1])
        self._sd = np.where(sd > 0, sd, 1.0)
        self._x = (x - self._mu) / self._sd
        self._y_mean = float(y.mean())
        k = self._kernel(self._x, self._x)
        self._dual = np.linalg.solve(k + self.alpha * np.eye(len(rows)), y - self._y_mean)
        self.n_train = len(rows)
        return self

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        assert self._x is not None and self._dual is not None and self._mu is not None and self._sd is not None
        x = (self.design.matrix(rows) - self._mu) / self._sd
        return np.exp(self._y_mean + self._kernel(x, self._x) @ self._dual)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "learner": "kernel ridge regression (RBF + linear kernel), log target",
                "features": self.design.names, "length_scale": self.length_scale, "alpha": self.alpha,
                "n_train": self.n_train,
                "feature_mean": None if self._mu is None else self._mu.tolist(),
                "feature_std": None if self._sd is None else self._sd.tolist(),
                "note": "refit from the exported feature table to predict; dual coefficients are not saved"}


def fit_kernel_ridge(rows: Sequence[Mapping[str, Any]], target: str, groups: Sequence[Any] | None = None,
                     inner_folds: int = 3) -> KernelRidgeModel:
    """Fit the kernel model; hyper-parameters by leave-clocks-out CV over ``groups`` (one per row)."""
    if target not in _TARGETS:
        raise ConfigError("target", target, allowed=_TARGETS)
    design = Design.build(rows, _KRR_TERMS, CATEGORICAL_FEATURES, drop_first=False)
    d = max(1, len(design.names))
    base = math.sqrt(d)
    best = (math.inf, base, 1e-2)
    if groups is not None and len(set(map(_group_key, groups))) >= 3:
        folds = clock_folds(rows, groups, inner_folds)
        y = np.log(np.array([_val(r.get(target)) for r in rows]))
        for factor in _KRR_LENGTH_FACTORS:
            for alpha in _KRR_ALPHAS:
                err = 0.0
                for test in folds:
                    train = np.setdiff1d(np.arange(len(rows)), test)
                    sub = [rows[i] for i in train]
                    m = KernelRidgeModel(target, Design.build(sub, _KRR_TERMS, CATEGORICAL_FEATURES, drop_first=False),
                                         length_scale=factor * base, alpha=alpha).fit(sub)
                    pred = np.log(m.predict([rows[i] for i in test]))
                    err += float(np.sum((pred - y[test]) ** 2))
                if err < best[0]:
                    best = (err, factor * base, alpha)
    return KernelRidgeModel(target, design, length_scale=best[1], alpha=best[2]).fit(rows)


# --- leave-clocks-out validation ---------------------------------------------------------------------
_TARGETS = ("power_w", "time_per_image_s")
_TARGET_UNITS = {"power_w": "W", "time_per_image_s": "s"}
MODEL_NAMES = {"loglinear": "FGCS-style log-linear", "kernel_ridge": "kernel ridge (RBF + linear)"}


def clock_group(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The clock setting a row was measured at (the unit held out together)."""
    if row.get("is_default_clock"):
        return ("default",)
    return tuple(row.get(f"{f}_setting") for f in SETTING_FIELDS)


def _group_key(g: Any) -> str:
    return json.dumps(g, default=str)


def clock_folds(rows: Sequence[Mapping[str, Any]], groups: Sequence[Any], n_folds: int) -> list[np.ndarray]:
    """Test-row indices per fold: distinct clock groups sorted by effective SM clock, dealt round-robin."""
    keys = [_group_key(g) for g in groups]
    clock_of: dict[str, list[float]] = {}
    for k, r in zip(keys, rows):
        clock_of.setdefault(k, []).append(_val(r.get("sm_clock_mhz")))
    ordered = sorted(clock_of, key=lambda k: (float(np.nanmean(clock_of[k])) if np.any(np.isfinite(clock_of[k]))
                                              else math.inf, k))
    k_folds = max(1, min(n_folds, len(ordered)))
    fold_of = {k: i % k_folds for i, k in enumerate(ordered)}
    return [np.array([i for i, k in enumerate(keys) if fold_of[k] == f]) for f in range(k_folds)]


#: A held-out MAPE above this, or one that is not finite, is a failed fit: its predictions are off by
#: more than the values themselves, and no number of it is printed.
MAX_FIT_MAPE_PCT = 100.0
FIT_OK, FIT_FAILED = "ok", "failed"


def fit_error_status(mape_pct: float, rmse: float) -> tuple[str, str | None]:
    """``("ok", None)`` or ``("failed", reason)`` for a held-out error (see :data:`MAX_FIT_MAPE_PCT`)."""
    if not (math.isfinite(mape_pct) and math.isfinite(rmse)):
        return FIT_FAILED, "held-out error not finite (predictions overflowed or were undefined)"
    if mape_pct > MAX_FIT_MAPE_PCT:
        return FIT_FAILED, f"held-out MAPE above {MAX_FIT_MAPE_PCT:g} % (predictions off by more than the values)"
    return FIT_OK, None


@dataclass
class HeldOutError:
    """Error of one model on one target over clocks it was not trained on.

    ``fit_status`` is ``"failed"`` (with ``reason``) when the error is not finite or the MAPE is above
    :data:`MAX_FIT_MAPE_PCT`; then ``mape_pct`` and ``rmse`` are ``None``: a failed fit has no error
    worth printing.
    """

    model: str
    target: str
    unit: str
    mape_pct: float | None
    rmse: float | None
    n_test: int
    folds: list[dict[str, Any]] = field(default_factory=list)
    fit_status: str = FIT_OK
    reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.fit_status == FIT_FAILED

    def text(self) -> str:
        """``held-out MAPE 1.61 %, RMSE 9.574 W`` or ``fit failed (reason)``."""
        if self.failed or self.mape_pct is None or self.rmse is None:
            return f"fit failed ({self.reason})"
        return f"held-out MAPE {self.mape_pct:.2f} %, RMSE {self.rmse:.4g} {self.unit}"


@dataclass
class PowerModelResult:
    """Fitted models (on all rows), their held-out-clock errors and what they were fitted on."""

    n_rows: int
    n_clocks: int
    activity_used: bool
    simulated: bool
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)
    validation: list[HeldOutError] = field(default_factory=list)
    validation_reason: str | None = None
    n_folds: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"simulated": self.simulated, "n_rows": self.n_rows, "n_clocks": self.n_clocks,
                "activity_used": self.activity_used, "fits": self.fits, "n_folds": self.n_folds,
                "validation": [asdict(v) for v in self.validation], "validation_reason": self.validation_reason,
                "validation_method": "leave-clocks-out: distinct clock settings dealt round-robin into folds; "
                                     "each fold predicted by models fitted on the other clocks",
                "notes": self.notes}

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write coefficients, hyper-parameters and validation errors as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(self.to_dict()), indent=2) + "\n", encoding="utf-8")
        return path

    def error(self, model: str, target: str) -> HeldOutError | None:
        return next((v for v in self.validation if v.model == model and v.target == target), None)

    def validation_table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows; a failed fit shows ``fit failed: reason``, never its error as a number."""
        header = ["model", "target", "held-out MAPE %", "held-out RMSE", "test rows", "folds"]
        rows = []
        for v in self.validation:
            if v.failed or v.mape_pct is None or v.rmse is None:
                mape, rmse = f"fit failed: {v.reason}", "-"
            else:
                mape, rmse = f"{v.mape_pct:.2f}", f"{v.rmse:.4g} {v.unit}"
            rows.append([MODEL_NAMES[v.model], v.target, mape, rmse, str(v.n_test), str(len(v.folds))])
        return header, rows

    def failed_fits(self) -> list[str]:
        """One line per failed fit (for the report's headline)."""
        out = []
        for key, fit in self.fits.items():
            if fit.get("fit_status") == FIT_FAILED:
                out.append(f"{_FIT_NAMES.get(key, key)}: fit failed ({fit.get('fit_failure_reason')})")
        return out

    def markdown(self, heading_level: int = 2) -> str:
        from sdbench.analysis.text import markdown_table

        h = "#" * heading_level
        out = [f"{h} Power and runtime models", ""]
        if self.simulated:
            out += ["> **SIMULATED DATA**: the models below are fitted to the simulated GPU's physical model.", ""]
        out.append(f"{self.n_rows} rows at {self.n_clocks} clock settings; activity counters "
                   f"{'used' if self.activity_used else 'absent (workload features instead)'}.")
        out.append("")
        for key in ("loglinear_power", "loglinear_runtime"):
            fit = self.fits.get(key)
            if fit and fit.get("fit_status") == FIT_FAILED:
                out.append(f"- `{fit['form']}`: **fit failed** ({fit.get('fit_failure_reason')})")
            elif fit:
                coefs = ", ".join(f"{n} = {c:.4g}" for n, c in fit["coefficients"].items())
                out.append(f"- `{fit['form']}`: intercept {fit['intercept']:.4g}; {coefs}"
                           + (f" (R^2 in log space {fit['r2_log']:.4f})" if fit.get("r2_log") is not None else ""))
        for key in ("kernel_ridge_power", "kernel_ridge_runtime"):
            fit = self.fits.get(key)
            if fit and fit.get("fit_status") == FIT_FAILED:
                out.append(f"- {fit['learner']} of {fit['target']}: **fit failed** ({fit.get('fit_failure_reason')})")
        out.append("")
        if self.validation:
            out.append(f"Held-out clocks ({self.n_folds}-fold leave-clocks-out):")
            out.append("")
            out.append(markdown_table(self.validation_table()))
        else:
            out.append(f"No held-out validation: {self.validation_reason}")
        out.append("")
        out.extend(f"- {n}" for n in self.notes)
        return "\n".join(out)




_FIT_NAMES = {"loglinear_power": "log-linear power model", "loglinear_runtime": "log-linear runtime model",
              "kernel_ridge_power": "kernel ridge power model", "kernel_ridge_runtime": "kernel ridge runtime model"}


def _errors(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """MAPE (%) and RMSE; overflowing predictions give inf or NaN here, judged by :func:`fit_error_status`."""
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.mean(np.abs(pred - truth) / truth) * 100.0), float(np.sqrt(np.mean((pred - truth) ** 2)))


def _coefficient_status(fit: Mapping[str, Any]) -> tuple[str, str | None]:
    """A fit whose own parameters are not finite failed before any validation."""
    values = [fit.get("intercept"), *(fit.get("coefficients") or {}).values(), fit.get("length_scale"), fit.get("alpha")]
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        return FIT_FAILED, "parameters not finite"
    return FIT_OK, None


def usable_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows with a positive power, time and effective SM clock (what every model needs)."""
    out = []
    for r in rows:
        if all((_num(r.get(k)) or 0.0) > 0 for k in ("power_w", "time_per_image_s", "sm_clock_mhz")):
            out.append(r)
    return out


def fit_power_models(rows: Sequence[Mapping[str, Any]], *, n_folds: int = 5) -> PowerModelResult:
    """Fit both models to all usable rows and validate them on held-out clocks.

    Raises :class:`SdbenchError` when no row has power, time and a clock (nothing can be fitted).
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ConfigError("n_folds", n_folds, reason="a whole number >= 2")
    usable = usable_rows(rows)
    if len(usable) < 3:
        raise SdbenchError(f"power model: {len(usable)} usable row(s) (power, time and SM clock are needed); "
                           "at least 3 are needed")
    groups = [clock_group(r) for r in usable]
    n_clocks = len({_group_key(g) for g in groups})
    result = PowerModelResult(n_rows=len(usable), n_clocks=n_clocks, activity_used=has_activity(usable),
                              simulated=any(bool(r.get("simulated")) for r in usable))
    if len(usable) < len(rows):
        result.notes.append(f"{len(rows) - len(usable)} row(s) without power, time or clock were left out")
    for target, name in (("power_w", "power"), ("time_per_image_s", "runtime")):
        ll = fit_loglinear(usable, target)
        result.fits[f"loglinear_{name}"] = ll.to_dict()
        if ll.rank_deficient:
            result.notes.append(f"log-linear {name} model: collinear features; least-norm coefficients")
        result.fits[f"kernel_ridge_{name}"] = fit_kernel_ridge(usable, target, groups).to_dict()
        for key in (f"loglinear_{name}", f"kernel_ridge_{name}"):
            status, reason = _coefficient_status(result.fits[key])
            result.fits[key].update(fit_status=status, fit_failure_reason=reason)

    if n_clocks < 3:
        result.validation_reason = f"{n_clocks} clock setting(s): leave-clocks-out needs at least 3"
        return result
    folds = clock_folds(usable, groups, n_folds)
    result.n_folds = len(folds)
    for target in _TARGETS:
        truth = np.array([_val(r.get(target)) for r in usable])
        preds = {"loglinear": np.full(len(usable), np.nan), "kernel_ridge": np.full(len(usable), np.nan)}
        fold_info: dict[str, list[dict[str, Any]]] = {"loglinear": [], "kernel_ridge": []}
        for test in folds:
            train = np.setdiff1d(np.arange(len(usable)), test)
            tr = [usable[i] for i in train]
            te = [usable[i] for i in test]
            held = sorted({_group_key(groups[i]) for i in test})
            models = {"loglinear": fit_loglinear(tr, target),
                      "kernel_ridge": fit_kernel_ridge(tr, target, [groups[i] for i in train])}
            for key, model in models.items():
                with np.errstate(over="ignore", invalid="ignore"):
                    p = model.predict(te)
                preds[key][test] = p
                mape, rmse = _errors(p, truth[test])
                status, reason = fit_error_status(mape, rmse)
                ok = status == FIT_OK
                fold_info[key].append({"held_out_clocks": [json.loads(h) for h in held], "n_test": int(test.size),
                                       "mape_pct": mape if ok else None, "rmse": rmse if ok else None,
                                       "fit_status": status, "reason": reason})
        for key in preds:
            mape, rmse = _errors(preds[key], truth)
            status, reason = fit_error_status(mape, rmse)
            ok = status == FIT_OK
            result.validation.append(HeldOutError(model=key, target=target, unit=_TARGET_UNITS[target],
                                                  mape_pct=mape if ok else None, rmse=rmse if ok else None,
                                                  n_test=len(usable), folds=fold_info[key], fit_status=status,
                                                  reason=reason))
            fit = result.fits[f"{key}_{'power' if target == 'power_w' else 'runtime'}"]
            if not ok and fit.get("fit_status") != FIT_FAILED:
                fit.update(fit_status=FIT_FAILED, fit_failure_reason=reason)
    return result
