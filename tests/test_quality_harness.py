"""experiments/quality/harness.py: its pure parts (sampler specs, NFE, which checkpoint a minute
mark scores, the eval key it reads back, the results table). Its runs are experiments, not tests."""

import importlib.util
import json
import pathlib
import sys

import ml_collections
import pytest
from hypothesis import given, strategies as st

from ddpm.pipelines import generation

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("harness", REPO / "experiments/quality/harness.py")
harness = importlib.util.module_from_spec(_spec)
sys.modules["harness"] = harness  # dataclasses look their module up.
_spec.loader.exec_module(harness)


def test_sampler_specs_nfe_and_the_eval_key_match_the_package():
  got = harness.parse_samplers("heun:10:trailing, dpm_solver_pp_2m:20,ddim:50:quadratic")
  assert [(s.method, s.steps, s.spacing, s.nfe) for s in got] == [
      ("heun", 10, "trailing", 19), ("dpm_solver_pp_2m", 20, "uniform", 20),
      ("ddim", 50, "quadratic", 50)]
  for s in got:  # The key --mode=eval writes is the one the harness reads back.
    cfg = ml_collections.ConfigDict(dict(method=s.method, num_steps=s.steps, spacing=s.spacing,
                                         eta=0.0, variance="beta_tilde", guidance_weight=0.0,
                                         class_label=-1))
    assert s.eval_name(0) == f"{generation.sampler_name(cfg)}_seed0"


def test_autoguided_sampler_specs_count_both_networks_and_match_the_package_key():
  got = harness.parse_samplers("heun:5:trailing:ag=1.5@1000,dpm_solver_pp_2m:10:ag=0.5@250raw,"
                               "dpm_solver_pp_2m:10:trailing:ag=1@1000/300-999,"
                               "dpm_solver_pp_2m:10:trailing:ag=1.5@1000+500+1500")
  assert [(s.method, s.steps, s.spacing, s.autoguidance_weight, s.guide_step, s.guide_use_ema,
           s.guide_t_min, s.guide_t_max, s.nfe) for s in got] == [
               ("heun", 5, "trailing", 1.5, 1000, True, 0, -1, 18),
               ("dpm_solver_pp_2m", 10, "uniform", 0.5, 250, False, 0, -1, 20),
               # Trailing steps 999, 899, ..., 99: 7 of them in 300..999 are guided.
               ("dpm_solver_pp_2m", 10, "trailing", 1.0, 1000, True, 300, 999, 17),
               ("dpm_solver_pp_2m", 10, "trailing", 1.5, 1000, True, 0, -1, 20)]
  assert [s.guide_steps for s in got] == [(1000,), (250,), (1000,), (500, 1000, 1500)]
  assert got[3].guide_average_steps == (500, 1500)
  assert got[0].label == "heun 5 trailing, autoguidance 1.5 by step 1000 (18 NFE)"
  assert got[2].label == "dpm_solver_pp_2m 10 trailing, autoguidance 1 by step 1000 at t 300-999 (17 NFE)"
  assert got[3].label == ("dpm_solver_pp_2m 10 trailing, autoguidance 1.5 by steps 500+1000+1500 "
                          "(mean) (20 NFE)")
  assert got[3].eval_name(0) == "dpm_solver_pp_2m10_trailing_ag1.5_guide500+1000+1500_seed0"
  assert "--config.sampling.guide_average_steps=(500, 1500)" in got[3].overrides()
  for s in got:
    cfg = ml_collections.ConfigDict(dict(
        method=s.method, num_steps=s.steps, spacing=s.spacing, eta=0.0, variance="beta_tilde",
        guidance_weight=0.0, class_label=-1, autoguidance_weight=s.autoguidance_weight,
        guide_step=s.guide_step, guide_average_steps=s.guide_average_steps,
        guide_use_ema=s.guide_use_ema, guide_t_min=s.guide_t_min, guide_t_max=s.guide_t_max))
    assert s.eval_name(0) == f"{generation.sampler_name(cfg)}_seed0"
    assert f"--config.sampling.guide_step={s.guide_step}" in s.overrides()


@pytest.mark.parametrize("bad", ["", "heun", "heun:x", "euler:10", "ddim:10:cosine",
                                 "heun:5:trailing:ag=0@1000", "heun:5:trailing:ag=1@x",
                                 "heun:5:trailing:ag=1", "heun:5:trailing:w=1@1000",
                                 "heun:5:trailing:ag=1@1000/500-100", "heun:5:ag=1@1000/x-9",
                                 "heun:5:trailing:ag=1@1000+", "heun:5:trailing:ag=1@1000+x"])
def test_bad_sampler_specs_are_one_line_errors(bad):
  with pytest.raises(ValueError) as e:
    harness.parse_samplers(bad)
  assert "\n" not in str(e.value)


def test_a_minute_mark_scores_the_newest_checkpoint_written_by_then():
  written = {250: 3.1, 500: 6.0, 750: 9.2, 812: 12.05}
  assert harness.checkpoint_at(written, 2.0) is None
  assert harness.checkpoint_at(written, 6.0) == 500
  assert harness.checkpoint_at(written, 12.0) == 750
  assert harness.checkpoint_at(written, 12.1) == 812
  # At the budget: the checkpoint saved when the run was stopped, whenever it landed.
  assert harness.checkpoint_at(written, 12.0, budget=12.0) == 812
  assert harness.checkpoint_at(written, 9.5, budget=12.0) == 750
  # --eval_only of a run stopped at 12.05 minutes: a mark at 12.0 is before its stop, whatever --minutes says.
  assert harness.checkpoint_at(written, 12.0, harness.recorded_budget(written)) == 750
  assert harness.recorded_budget({}) is None


def test_without_marks_eval_only_scores_the_last_checkpoint_whatever_minutes_says():
  written = {250: 3.1, 500: 6.0, 750: 9.2, 812: 12.05}
  budget = harness.recorded_budget(written)
  marks = harness.minute_marks("", budget)
  assert [harness.checkpoint_at(written, m, budget) for m in marks] == [812]
  assert harness.minute_marks(" 6, 9.5 ", budget) == [6.0, 9.5]
  args = harness.parse_args(["--name=x", "--eval_only"])  # --minutes left at its default
  assert args.minutes != budget and harness.minute_marks(args.eval_minutes, budget) == [budget]


@pytest.mark.parametrize("bad", ["-1", "6,x", "nan"])
def test_bad_minute_marks_are_one_line_errors_naming_the_flag(bad):
  with pytest.raises(ValueError) as e:
    harness.minute_marks(bad, 12.0)
  assert "--eval_minutes" in str(e.value) and "\n" not in str(e.value)


@given(st.dictionaries(st.integers(1, 10_000), st.floats(0, 60), min_size=1), st.floats(0, 60),
       st.floats(0, 60))
def test_the_checkpoint_of_a_mark_is_the_newest_written_by_then_and_grows_with_the_mark(
    written, m1, m2):
  lo, hi = sorted((m1, m2))
  for m in (lo, hi):
    got = harness.checkpoint_at(written, m)
    by_then = [s for s, t in written.items() if t <= m + 1e-9]  # Its float tolerance.
    assert got == (max(by_then) if by_then else None)
  a, b = harness.checkpoint_at(written, lo), harness.checkpoint_at(written, hi)
  assert a is None or (b is not None and a <= b)
  assert harness.checkpoint_at(written, hi, budget=lo) == max(written)  # Past the budget: the last.


def test_render_tables_every_row(tmp_path):
  row = dict(run="baseline", overrides=["--config.diffusion.prediction_type=v"], seed=0,
             minutes=12.0, step=900, sampler="heun 10 trailing (19 NFE)", nfe=19,
             num_samples=10000, fid=55.1, precision=0.63, recall=0.91, inception_score=8.9,
             real_floor_fid=0.83)
  fashion = row | {"config": "configs/fashion_mnist.py", "fid": 40.0, "real_floor_fid": 2.1}
  (tmp_path / "runs.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in (row, row | {"seed": 1}, fashion)))
  harness.render(tmp_path)
  table = (tmp_path / "RESULTS.md").read_text()
  assert table.count("| baseline | mnist |") == 2 and "| 55.10 | 0.630 | 0.910 |" in table
  assert "| baseline | fashion_mnist |" in table and "| 2.10 |" in table
  assert (tmp_path / "fid_vs_minutes.png").stat().st_size > 0
