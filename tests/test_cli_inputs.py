"""The command line with bad input: `error: <message>` verbatim and exit 1, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from immunoedit_models.cli import app
from immunoedit_models.errors import FitError
from immunoedit_models.fit import load_problem
from immunoedit_models.fit.run import PROBLEM_MARK, fit, problem_hash

TIMECOURSE = Path(__file__).resolve().parents[1] / "fitting" / "reference_timecourse"


def _error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("param", ["[/]", "a:x:2", "[red]a"])
def test_user_text_in_errors_is_printed_verbatim(param):
    # rich would read '[/]' as markup (and fail), ':x:' as an emoji and '[red]' as a style
    assert _error(["simulate", "kuznetsov_1994", "--param", param]) == \
        f"error: --param '{param}' must look like NAME=NUMBER"


def test_output_paths_are_checked_before_simulating(tmp_path):
    out = tmp_path / "r.csv"
    assert _error(["simulate", "kuznetsov_1994", "--out", str(out)]) == (
        f"error: cannot tell the format of '{out}' from its suffix: name it *.nc (netCDF) or *.zarr "
        "(a zarr store, for large batches)")
    assert _error(["simulate", "kuznetsov_1994", "--plot", str(tmp_path / "r.xyz")]).startswith(
        f"error: cannot write a figure to '{tmp_path / 'r.xyz'}': name it *.png, *.pdf or *.svg")
    assert not out.exists()


def test_trial_sensitivity_refuses_tolerances():
    assert _error(["sensitivity", "tests/specs/trial_small.yaml", "--trial", "--method", "morris",
                   "--output", "orr:COMBO", "--param", "kkill:1:2", "--rtol", "1e-9"]) == (
        "error: --rtol and --atol do not apply with --trial: a trial solves with its design's tolerances "
        "('solver: {rtol, atol}' in the design file)")


def test_fit_output_folder_is_checked(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert _error(["fit", str(TIMECOURSE), "--out", str(afile)]).endswith(
        f"error: --out {afile} is a file: give a folder for the fit's checkpoints and results")
    assert afile.read_text() == "mine"


def test_resume_refuses_another_problems_folder(tmp_path):
    problem = load_problem(TIMECOURSE)
    out = tmp_path / "fit"
    out.mkdir()
    (out / PROBLEM_MARK).write_text("0123456789abcdef checkmate067_os\n")
    with pytest.raises(FitError, match=f"^{out} holds a fit of another problem .* problem hash 0123456789abcdef, "
                                       f"this one {problem_hash(problem)}\\. Choose another output folder"):
        fit(problem, out, resume=True)
    assert (out / PROBLEM_MARK).read_text() == "0123456789abcdef checkmate067_os\n"
