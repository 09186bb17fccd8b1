"""Power-model features and fits: the export (CSV, Parquet), coefficient recovery on synthetic log-linear
data, leave-clocks-out folds, and held-out errors on sweeps from the simulated GPU's model."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sdbench.analysis.powermodel import (
    FEATURE_COLUMNS,
    clock_folds,
    clock_group,
    feature_rows,
    fit_error_status,
    fit_kernel_ridge,
    fit_loglinear,
    fit_power_models,
    write_features,
)
from sdbench.analysis.synthetic import synthetic_sweep_records
from sdbench.errors import ConfigError, SdbenchError

CLOCKS_MHZ = tuple(range(1980, 600, -120))


def _loglinear_rows(a: float, b: float, c: float, d: float, noise_rel: float, seed: int = 0,
                    repeats: int = 4) -> list[dict[str, Any]]:
    """Rows whose power follows log P = a + b log f + c fp + d dram exactly (times a small noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in CLOCKS_MHZ:
        for _ in range(repeats):
            fp = rng.uniform(0.2, 0.8)
            dram = rng.uniform(0.1, 0.6)
            power = math.exp(a + b * math.log(f) + c * fp + d * dram) * (1 + noise_rel * rng.standard_normal())
            time_s = 2.0 * (0.3 + 0.7 * 1980 / f) * (1 + noise_rel * rng.standard_normal())
            rows.append({"sm_clock_mhz": float(f), "sm_clock_mhz_setting": float(f), "is_default_clock": False,
                         "fp_activity": fp, "dram_activity": dram, "power_w": power, "time_per_image_s": time_s,
                         "model": "sd15", "scheduler": "euler", "pixels": 512 * 512.0, "steps": 30.0,
                         "batch_size": 1.0, "simulated": False})
    return rows


def test_loglinear_power_fit_recovers_known_coefficients() -> None:
    a, b, c, d = -2.0, 1.1, 0.6, 0.35
    rows = _loglinear_rows(a, b, c, d, noise_rel=0.002)
    model = fit_loglinear(rows, "power_w")
    assert model.design.names == ["log_sm_clock_mhz", "fp_activity", "dram_activity"]
    assert model.intercept == pytest.approx(a, abs=0.05)
    assert model.coefficients["log_sm_clock_mhz"] == pytest.approx(b, abs=0.01)
    assert model.coefficients["fp_activity"] == pytest.approx(c, abs=0.02)
    assert model.coefficients["dram_activity"] == pytest.approx(d, abs=0.02)
    assert model.r2_log is not None and model.r2_log > 0.99
    assert not model.rank_deficient
    pred = model.predict(rows)
    truth = np.array([r["power_w"] for r in rows])
    assert np.max(np.abs(pred / truth - 1)) < 0.01


def test_held_out_error_reported_for_both_models_and_targets() -> None:
    rows = _loglinear_rows(-2.0, 1.1, 0.6, 0.35, noise_rel=0.002)
    result = fit_power_models(rows, n_folds=4)
    assert result.n_clocks == len(CLOCKS_MHZ) and result.n_folds == 4
    assert {(v.model, v.target) for v in result.validation} == {
        (m, t) for m in ("loglinear", "kernel_ridge") for t in ("power_w", "time_per_image_s")}
    ll = result.error("loglinear", "power_w")
    assert ll is not None and ll.unit == "W" and ll.n_test == len(rows)
    # The data are exactly log-linear: the held-out error is the noise, nothing more.
    assert ll.mape_pct < 0.5
    assert result.error("kernel_ridge", "power_w").mape_pct < 3.0
    assert result.error("loglinear", "time_per_image_s").mape_pct < 1.0
    # Each fold held out whole clocks, and every clock was held out once.
    held = [tuple(c) for fold in ll.folds for c in fold["held_out_clocks"]]
    assert len(held) == len(set(held)) == len(CLOCKS_MHZ)
    assert all(f["mape_pct"] >= 0 and f["rmse"] >= 0 for f in ll.folds)


def test_leave_clocks_out_folds_never_split_a_clock() -> None:
    rows = _loglinear_rows(0.0, 1.0, 0.0, 0.0, noise_rel=0.0, repeats=3)
    groups = [clock_group(r) for r in rows]
    folds = clock_folds(rows, groups, 3)
    assert len(folds) == 3
    all_idx = np.sort(np.concatenate(folds))
    assert np.array_equal(all_idx, np.arange(len(rows)))
    fold_clocks = [{rows[i]["sm_clock_mhz"] for i in f} for f in folds]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not fold_clocks[i] & fold_clocks[j]
    # Round-robin over sorted clocks: every fold spans the range (none holds only the lowest clocks).
    assert all(max(c) - min(c) >= 3 * 120 for c in fold_clocks)


def test_without_activity_the_power_model_uses_workload_features() -> None:
    rows = _loglinear_rows(-2.0, 1.0, 0.0, 0.0, noise_rel=0.001)
    for i, r in enumerate(rows):
        r.pop("fp_activity")
        r.pop("dram_activity")
        if i % 2:
            r["pixels"] = 1024 * 1024.0
            r["model"] = "sdxl"
    model = fit_loglinear(rows, "power_w")
    assert "fp_activity" not in model.design.names
    assert {"log_sm_clock_mhz", "log_pixels", "model=sdxl"} <= set(model.design.names)
    assert "no activity counters" in model.form
    runtime = fit_loglinear(rows, "time_per_image_s")
    assert {"log_sm_clock_mhz", "log_sm_clock_mhz^2"} <= set(runtime.design.names)


def test_kernel_ridge_interpolates_held_out_clocks() -> None:
    rows = _loglinear_rows(-2.0, 1.1, 0.6, 0.35, noise_rel=0.002)
    groups = [clock_group(r) for r in rows]
    train = [r for r in rows if r["sm_clock_mhz"] != 1260]
    test = [r for r in rows if r["sm_clock_mhz"] == 1260]
    model = fit_kernel_ridge(train, "power_w", [clock_group(r) for r in train])
    pred = model.predict(test)
    truth = np.array([r["power_w"] for r in test])
    assert np.max(np.abs(pred / truth - 1)) < 0.03
    assert model.to_dict()["length_scale"] > 0 and len(groups) == len(rows)


# --- features from sweep records -------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_records() -> list[dict[str, Any]]:
    return synthetic_sweep_records(sm_clocks_mhz=tuple(range(1980, 600, -90)), rounds=5, noise_rel=0.005, seed=21)


def test_feature_rows_carry_the_seed_features_clocks_and_metrics(sweep_records: list[dict[str, Any]]) -> None:
    rows = feature_rows(sweep_records)
    assert len(rows) == len(sweep_records)
    assert all(list(r) == list(FEATURE_COLUMNS) for r in rows)
    r = next(r for r in rows if r["sm_clock_mhz_setting"] == 1260)
    rec = next(x for x in sweep_records if x["sm_clock_mhz_setting"] == 1260)
    assert (r["steps"], r["pixels"], r["batch_size"], r["scheduler"], r["model"], r["attention"]) == (
        30, 512 * 512, 1, "euler", "sd15", "sdpa")
    assert r["sm_clock_mhz"] == 1260 and r["sm_clock_mhz_measured"] == 1260
    assert r["time_per_image_s"] == pytest.approx(np.mean(rec["time_per_image_s_samples"]))
    assert r["energy_per_image_j"] == pytest.approx(np.mean(rec["energy_per_image_j_samples"]))
    assert r["fp_activity"] == pytest.approx(rec["activity_tensor_active_mean"] + rec["activity_fp16_active_mean"])
    assert r["dram_activity"] == rec["activity_dram_active_mean"]
    assert r["simulated"] is True
    d = next(r for r in rows if r["is_default_clock"])
    assert d["sm_clock_mhz_setting"] is None and d["sm_clock_mhz"] == 1980


def test_activity_field_variants_are_recognised() -> None:
    rec = {"record_type": "case", "time_per_image_s_median": 1.0, "energy_per_image_j_median": 300.0,
           "sm_clock_mhz": 1500, "activity_pipe_tensor_active": 0.5, "activity_dram_active_mean": 0.2,
           "activity_dram_active_max": 0.9, "activity_fp32_active": 0.1}
    row = feature_rows([rec])[0]
    assert row["fp_activity"] == pytest.approx(0.6)
    assert row["dram_activity"] == 0.2
    assert row["power_w"] == pytest.approx(300.0)


def test_features_written_as_csv_and_parquet(tmp_path: Path, sweep_records: list[dict[str, Any]]) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    rows = feature_rows(sweep_records)
    out = write_features(rows, tmp_path)
    with out["csv"].open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == list(FEATURE_COLUMNS)
        assert len(list(reader)) == len(rows)
    table = pq.read_table(out["parquet"])
    assert table.num_rows == len(rows) and table.column_names == list(FEATURE_COLUMNS)
    assert str(table.schema.field("power_w").type) == "double"
    assert str(table.schema.field("model").type) == "string"
    assert table.column("sm_clock_mhz").to_pylist() == [r["sm_clock_mhz"] for r in rows]


def test_fit_on_simulated_sweep_and_json(tmp_path: Path, sweep_records: list[dict[str, Any]]) -> None:
    result = fit_power_models(feature_rows(sweep_records))
    assert result.simulated and result.activity_used
    assert result.error("kernel_ridge", "power_w").mape_pct < 5.0
    assert result.error("loglinear", "time_per_image_s").mape_pct < 5.0
    path = result.save_json(tmp_path / "powermodel.json")
    doc = json.loads(path.read_text())
    assert doc["simulated"] is True
    assert set(doc["fits"]) == {"loglinear_power", "loglinear_runtime", "kernel_ridge_power", "kernel_ridge_runtime"}
    assert "log_sm_clock_mhz" in doc["fits"]["loglinear_power"]["coefficients"]
    assert doc["validation"] and all(v["mape_pct"] >= 0 for v in doc["validation"])
    assert "SIMULATED" in result.markdown()


def test_too_few_rows_or_clocks() -> None:
    rows = _loglinear_rows(0.0, 1.0, 0.1, 0.1, noise_rel=0.01)
    with pytest.raises(SdbenchError, match="usable row"):
        fit_power_models(rows[:2])
    two_clocks = [r for r in rows if r["sm_clock_mhz"] in (1980.0, 1860.0)]
    result = fit_power_models(two_clocks)
    assert not result.validation and "at least 3" in (result.validation_reason or "")
    with pytest.raises(ConfigError, match="n_folds"):
        fit_power_models(rows, n_folds=1)
    with pytest.raises(ConfigError, match="target"):
        fit_loglinear(rows, "energy")


def test_runtime_polynomial_is_linear_through_few_clocks() -> None:
    rows = _loglinear_rows(0.0, 1.0, 0.1, 0.1, noise_rel=0.01)
    few = [r for r in rows if r["sm_clock_mhz"] in (1980.0, 1860.0, 1740.0)]
    assert "log_sm_clock_mhz^2" not in fit_loglinear(few, "time_per_image_s").design.names
    assert "poly1" in fit_loglinear(few, "time_per_image_s").form
    assert "log_sm_clock_mhz^2" in fit_loglinear(rows, "time_per_image_s").design.names


# --- failed fits are reported as failed, never as a number -----------------------------------------------
@pytest.mark.parametrize("mape, rmse, status", [(1.6, 9.5, "ok"), (99.9, 1.0, "ok"), (100.5, 1.0, "failed"),
                                                (1.05e56, 3.0e53, "failed"), (math.inf, 1.0, "failed"),
                                                (math.nan, math.nan, "failed"), (5.0, math.inf, "failed")])
def test_fit_error_status(mape: float, rmse: float, status: str) -> None:
    got, reason = fit_error_status(mape, rmse)
    assert got == status and (reason is None) == (status == "ok")


def test_a_fit_that_explodes_is_failed_in_every_output(monkeypatch: pytest.MonkeyPatch) -> None:
    import sdbench.analysis.powermodel as pm

    rows = _loglinear_rows(-2.0, 1.1, 0.6, 0.35, noise_rel=0.002)
    real = pm._errors

    def runtime_blows_up(pred: Any, truth: Any) -> tuple[float, float]:
        return (math.inf, math.inf) if float(np.mean(truth)) < 50 else real(pred, truth)  # times are ~2-6 s

    monkeypatch.setattr(pm, "_errors", runtime_blows_up)
    result = fit_power_models(rows, n_folds=4)
    runtime = [v for v in result.validation if v.target == "time_per_image_s"]
    assert runtime and all(v.failed and v.mape_pct is None and v.rmse is None for v in runtime)
    assert all(f["fit_status"] == "failed" and f["mape_pct"] is None for v in runtime for f in v.folds)
    assert all(v.text().startswith("fit failed (held-out error not finite") for v in runtime)
    power = result.error("loglinear", "power_w")
    assert power is not None and not power.failed and power.text().startswith("held-out MAPE ")
    header, table = result.validation_table()
    failed_rows = [r for r in table if r[1] == "time_per_image_s"]
    assert all(r[2].startswith("fit failed: ") and r[3] == "-" for r in failed_rows)
    assert result.fits["loglinear_runtime"]["fit_status"] == "failed"
    assert result.fits["loglinear_power"]["fit_status"] == "ok"
    md = result.markdown()
    assert "**fit failed**" in md and "inf" not in md.lower().replace("information", "")
    assert result.failed_fits() == [
        "log-linear runtime model: fit failed (held-out error not finite (predictions overflowed or were undefined))",
        "kernel ridge runtime model: fit failed (held-out error not finite (predictions overflowed or were undefined))"]
    doc = json.loads(json.dumps(result.to_dict()))
    assert all(v["fit_status"] == "failed" for v in doc["validation"] if v["target"] == "time_per_image_s")
