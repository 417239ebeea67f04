"""Mean +- std over seeds (experiments.seedtable and ``python -m experiments seed-table``), on
run files written with known values so every figure of the table is checked exactly."""
from __future__ import annotations

import numpy as np
import pytest

from experiments import provenance, results, seedtable
from experiments.__main__ import main

ACC = {("a", 0): 0.90, ("a", 1): 0.92, ("a", 2): 0.94, ("b", 0): 0.80, ("b", 1): 0.85}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    meta = provenance.run_metadata()
    for (model, seed), acc in ACC.items():
        stem = f"toy-{'0123456789' if model == 'a' else 'abcdef0123'}-seed{seed}"
        results.save(folder / f"{stem}.h5", "toy", {"model": model, "seed": seed, "lr": 0.1},
                     {"test_acc": np.float64(acc), "curve": np.arange(3.0)},
                     tables={"summary": [{"dataset": d, "nll": acc + i, "faster": i == 0}
                                         for i, d in enumerate(("moons", "rings"))]},
                     meta=meta, run_id=stem)
    results.save(folder / "other-0123456789-seed0.h5", "other", {"seed": 0},
                 {"test_acc": np.float64(0.1)}, meta=meta)
    return folder


def test_scalar_metrics_grouped_by_a_config_key(runs):
    groups = seedtable.group_rows(seedtable.run_rows(runs, "toy"), ["model"], ["test_acc"])
    by = {g["key"]: g for g in groups}
    assert by[("a",)]["seeds"] == [0, 1, 2] and by[("b",)]["seeds"] == [0, 1]
    assert by[("a",)]["test_acc"] == pytest.approx([0.90, 0.92, 0.94], abs=0)
    table = seedtable.seed_table(runs, "toy", ["model"], ["test_acc"])
    # a: mean 0.92, std (ddof 1) 0.02; b: mean 0.825, std 0.035355...
    assert "| a | 0.9200 +- 0.0200 (3) | 0,1,2 |" in table
    assert "| b | 0.8250 +- 0.0354 (2) | 0,1 |" in table
    assert table.splitlines()[0] == "| model | test_acc | seeds |"


def test_array_metrics_are_reduced_per_run_then_over_seeds(runs):
    # "curve" is [0, 1, 2] in every run: mean 1, last 2, max 2, sum 3, min 0, with zero spread
    table = seedtable.seed_table(runs, "toy", ["model"],
                                 ["curve:mean", "curve:last", "curve:min", "curve:sum"])
    assert "| a | 1.000 +- 0.000 (3) | 2.000 +- 0.000 (3) | 0.000 +- 0.000 (3) | " \
           "3.000 +- 0.000 (3) | 0,1,2 |" in table
    assert table.splitlines()[0] == "| model | curve:mean | curve:last | curve:min | curve:sum " \
                                    "| seeds |"


def test_table_rows_grouped_by_their_columns_and_booleans_counted(runs):
    table = seedtable.seed_table(runs, "toy", ["dataset"], ["nll", "faster"], table="summary")
    # the five accuracies: mean 4.41 / 5 = 0.882, sample std sqrt(0.01288 / 4) = 0.05675
    assert "| moons | 0.8820 +- 0.0567 (5) | 5/5 | 0,1,2 |" in table
    assert "| rings | 1.882 +- 0.057 (5) | 0/5 | 0,1,2 |" in table


@pytest.mark.parametrize("samples, text", [([2.0], "2.000 (1)"), ([0.0, 0.0], "0.000 +- 0.000 (2)"),
                                           ([1234.5, 1236.5], "1236 +- 1 (2)"),
                                           ([True, False, True], "2/3")])
def test_format_cell(samples, text):
    assert seedtable.format_cell(samples) == text


def test_cli_prints_the_table(runs, capsys):
    assert main(["seed-table", str(runs), "--experiment", "toy", "--by", "model", "--values",
                 "test_acc", "--digits", "2"]) == 0
    assert "| a | 0.92 +- 0.02 (3) | 0,1,2 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--experiment", "nope", "--by", "model", "--values", "test_acc"],
     "no finished run of 'nope'"),
    (["--experiment", "toy", "--by", "modle", "--values", "test_acc"], "rows have no ['modle']"),
    (["--experiment", "toy", "--by", "model", "--values", "x", "--table", "t"], "no table 't'"),
    (["--experiment", "toy", "--by", "model", "--values", "curve"],
     "'curve' holds one value per epoch (shape (3,)); name a reduction, e.g. curve:mean"),
    (["--experiment", "toy", "--by", "model", "--values", "curve:median"],
     "unknown reduction(s) ['median']"),
])
def test_cli_refusals_name_the_problem(runs, capsys, argv, message):
    assert main(["seed-table", str(runs), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_folder_is_refused(tmp_path, capsys):
    assert main(["seed-table", str(tmp_path / "none"), "--experiment", "toy", "--by", "model",
                 "--values", "test_acc"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_optional_settings_are_filled_in_at_their_defaults(tmp_path):
    # thesis_efficiency leaves its ablation keys out of a default run's configuration; the
    # table still groups on them, the default run under the default value
    meta = provenance.run_metadata()
    for stem, extra, acc in (("thesis_efficiency-0123456789-seed0", {}, 0.86),
                             ("thesis_efficiency-abcdef0123-seed0", {"activation": "tanh"}, 0.84)):
        results.save(tmp_path / f"{stem}.h5", "thesis_efficiency",
                     {"model": "odenet", "seed": 0, **extra}, {"test_acc": np.float64(acc)},
                     meta=meta, run_id=stem)
    table = seedtable.seed_table(tmp_path, "thesis_efficiency", ["activation", "pre_activation"],
                                 ["test_acc"])
    assert "| relu | none | 0.8600 (1) | 0 |" in table
    assert "| tanh | none | 0.8400 (1) | 0 |" in table
