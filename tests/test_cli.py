"""The command line as a user runs it: models, validate, simulate (netCDF + PNG)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from immunoedit_models.cli import _compile_and_run_seconds, app
from immunoedit_models.spec.loader import builtin_specs

runner = CliRunner()


def test_models_lists_builtin_specs():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "benchmark_reference" in result.output and "10 states, 42 params" in result.output
    # one line per spec whatever the width: a header, then each name at the start of its own line
    lines = [line.split() for line in result.output.splitlines()]
    assert [words[0] for words in lines] == ["name", *builtin_specs()]
    assert lines[1][1:5] == ["model", "10", "states,", "42"]


def test_validate_ok_and_errors(specs_dir):
    ok = runner.invoke(app, ["validate", "benchmark_reference"])
    assert ok.exit_code == 0 and "ok benchmark_reference (model): 10 states" in ok.output
    bad = runner.invoke(app, ["validate", str(specs_dir / "broken.yaml")])
    assert bad.exit_code == 1
    assert "9 problems in model spec:" in bad.output
    assert "broken.yaml:20: flow 'kill': rate uses undefined symbol 'k_kil' (did you mean 'k_kill'?)" in bad.output


def test_validate_trial_designs_and_fitting_problems(tmp_path):
    ok = runner.invoke(app, ["validate", "impower150"])
    assert ok.exit_code == 0, ok.output
    assert " ".join(ok.output.split()) == (
        "ok trial impower150: model immunoediting_nsclc, arms ABCP, ACP, BCP, 356 patients per arm, "
        "28 scans after baseline over 53.5 months, visits on the scheduled scan days")
    problem = runner.invoke(app, ["validate", "fitting/reference_timecourse"])
    assert problem.exit_code == 0, problem.output
    assert " ".join(problem.output.split()) == ("ok fitting problem reference_timecourse (timecourse): model "
                                                "benchmark_reference, 3 free parameters, 20 measurements")
    design = tmp_path / "design.yaml"
    design.write_text(open("tests/specs/trial_small.yaml").read()
                      .replace("recist:", "visits: {offset_mean_days: 2, offset_sd_days: 9}\nrecist:"))
    bad = runner.invoke(app, ["validate", str(design)])
    assert bad.exit_code == 1
    assert bad.output.startswith("1 problem in trial design:\n")
    assert (f"{design}:12: visits: offsets of 2 +- 3 x 9 days reach beyond +-20 days" in
            bad.output.replace("\n", ""))
    folder = tmp_path / "problem"
    shutil.copytree("fitting/reference_timecourse", folder)
    text = (folder / "problem.yaml").read_text()
    (folder / "problem.yaml").write_text(text.replace("model: benchmark_reference", "model: benchmark_referense"))
    misspelt = runner.invoke(app, ["validate", str(folder)])
    assert misspelt.exit_code == 1
    assert "spec 'benchmark_referense': no such file or built-in spec (did you mean 'benchmark_reference'?)" in \
        misspelt.output.replace("\n", ""), misspelt.output
    (folder / "problem.yaml").write_text(text.replace("  kkill:", "  kkil:"))
    unknown = runner.invoke(app, ["validate", str(folder)])
    assert unknown.exit_code == 1
    assert " ".join(unknown.output.split()) == (
        "problem 'reference_timecourse': free parameters ['kkil'] are not parameters of model "
        "'benchmark_reference' (noise parameters need 'role: noise')")


def test_simulate_writes_netcdf_and_png(tmp_path):
    out, png = tmp_path / "r.nc", tmp_path / "r.png"
    result = runner.invoke(app, ["simulate", "benchmark_reference", "--days", "60", "--param", "kkill=2.5",
                                 "--out", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "status 0 (ok)" in result.output
    ds = xr.open_dataset(out)
    assert ds.sizes["time"] == 61 and ds.attrs["model"] == "benchmark_reference"
    assert ds.attrs["regimen"].startswith("q21d_x18")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    ds.close()


def test_simulate_bad_parameter_is_a_clear_error():
    result = runner.invoke(app, ["simulate", "benchmark_reference", "--param", "kkil=2"])
    assert result.exit_code == 1
    assert "'kkil' is not a parameter of model 'benchmark_reference' (did you mean 'kkill'?)" in result.output
    malformed = runner.invoke(app, ["simulate", "benchmark_reference", "--param", "kkill"])
    assert malformed.exit_code == 1 and "must look like NAME=NUMBER" in malformed.output


def test_saved_result_round_trips_with_provenance(tmp_path):
    import immunoedit_models as ie

    model = ie.compile_model("benchmark_reference", backend="numba")
    ds = ie.simulate(model, np.arange(0.0, 30.0))
    path = ie.save_result(ds, tmp_path / "x.nc")
    back = ie.load_result(path)
    np.testing.assert_array_equal(back["T"].values, ds["T"].values)
    assert back.attrs["spec_hash"] == ds.attrs["spec_hash"] and back["T"].attrs["units"] == "cell"
    # compressed (zlib): the same values, the states stored compressed
    packed = ie.load_result(ie.save_result(ds, tmp_path / "z.nc", compress=True))
    xr.testing.assert_identical(packed, back)
    with xr.open_dataset(tmp_path / "z.nc") as raw, xr.open_dataset(path) as plain:
        assert raw["T"].encoding["zlib"] and not plain["T"].encoding["zlib"]


# Runs the CLI in a fresh process: the JAX settings it makes only act before jax is imported.
_CLI_WITH_CACHE_HITS = """
import sys
from immunoedit_models import cli
cli._keep_jax_compiles()
import jax.monitoring
events = []
jax.monitoring.register_event_listener(lambda event, **kwargs: events.append(event))
try:
    cli.app(sys.argv[1:])
except SystemExit as stop:
    assert stop.code in (None, 0), stop.code
print("CACHE_HITS", events.count("/jax/compilation_cache/cache_hits"))
"""


def test_cli_keeps_compiled_jax_solves_on_disk(tmp_path):
    """A second `immunoedit simulate --backend jax` loads the compiled solve from
    `$IMMUNOEDIT_CACHE_DIR/jax` instead of compiling it, and gives the same result."""
    env = {k: v for k, v in os.environ.items() if k not in ("EQX_ON_ERROR", "JAX_COMPILATION_CACHE_DIR")}
    env["IMMUNOEDIT_CACHE_DIR"] = str(tmp_path / "cache")
    hits, results = [], []
    for run in range(2):
        out = tmp_path / f"run{run}.nc"
        proc = subprocess.run([sys.executable, "-c", _CLI_WITH_CACHE_HITS, "simulate", "benchmark_reference",
                               "--backend", "jax", "--days", "40", "--out", str(out)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        hits.append(int(proc.stdout.split("CACHE_HITS")[-1]))
        results.append(xr.load_dataset(out))
        if run == 0:
            assert list((tmp_path / "cache" / "jax").glob("jit__solve_batch-*")), "the solve was not cached"
    assert hits[0] == 0 and hits[1] >= 1
    np.testing.assert_array_equal(results[1]["T"].values, results[0]["T"].values)


def test_simulate_summary_separates_compile_from_run():
    """The first call's extra time (loading or compiling the solver) is counted as compilation:
    a quick first call is timed again; a slow numba one is not repeated."""
    calls = []

    def quick():    # a repeat that costs ~nothing
        calls.append(1)

    compile_s, run_s = _compile_and_run_seconds(quick, 1.0, 0.4, "numba")
    assert calls == [1] and run_s < 0.05 and compile_s == pytest.approx(1.4 - run_s, abs=1e-9)
    assert _compile_and_run_seconds(quick, 1.0, 2.5, "numba") == (1.0, 2.5) and calls == [1]
    compile_s, run_s = _compile_and_run_seconds(quick, 0.3, 6.0, "jax")   # JAX: the first call compiles
    assert calls == [1, 1] and compile_s == pytest.approx(6.3 - run_s, abs=1e-9)
