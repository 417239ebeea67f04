"""Seed 002's classification experiment (issue 11, point 5) in quick mode on the synthetic IDX
data set: LM-ResNet vs ResNet of equal depth, with and without stochastic depth."""
from __future__ import annotations

import numpy as np
import pytest

import nets.lm_resnet
from experiments import _image, durable, registry, results
from experiments import lm_resnet_classify as lm
from experiments.__main__ import main
from nets import LMStack, ResNetStack
from tests.experiments._harness import (
    QUIET,
    assert_same_run,
    crash_and_resume,
    tiny,
)
from tests.experiments._record import assert_run_record


@pytest.mark.parametrize("model", lm.MODELS)
def test_quick_mode_writes_results_figure_and_k(tmp_path, idx_dir, model):
    argv = ["lm_resnet_classify", "--quick", "--out", str(tmp_path), "--set",
            f"data_dir={idx_dir}", "--set", f"model={model}"]
    assert main(argv) == 0
    (path,) = results.find_runs(tmp_path, "lm_resnet_classify")
    assert path.with_suffix(".png").stat().st_size > 0
    run = results.load(path)
    assert_run_record(run, "lm_resnet_classify", 0)
    cfg, m = run["config"], run["metrics"]
    assert cfg["model"] == model and cfg["dataset"] == "fashion-mnist"
    assert m["train_loss"][1] < m["train_loss"][0] and 0 <= m["test_acc"] <= 1
    assert m["depth"] == 2 * 4 + 2 + 1                          # blocks [2, 2]
    assert np.allclose(m["survival"], [0.95, 0.9, 0.85, 0.8] if model.endswith("_sd")
                          else [1, 1, 1, 1])
    assert {r["depth"] for r in run["tables"]["paper_table_1"]} >= {20, 56, 110}
    if model.startswith("lm_"):        # one k per block after each stage's first, per epoch
        assert m["k"].shape == (2, 2) and np.all(np.abs(m["k"]) < 1)
        assert not np.array_equal(m["k"][0], m["k"][1])       # learned
        rows = run["tables"]["k_final"]
        assert [(r["stage"], r["block"], r["depth"]) for r in rows] == [(0, 1, 1), (1, 1, 3)]
        params = results.load_checkpoint(path)["arrays"]["params"]
        assert [r["k"] for r in rows] == [float(params[sl][0]) for *_, sl in lm.k_layout(
            lm.build_schedule(cfg)(0)[0])]
    else:
        assert "k" not in m and "k_final" not in run["tables"]


def test_resnet_and_lm_resnet_have_the_same_blocks():
    cfg = lm.make_config(True)
    res = lm.build_schedule({**cfg, "model": "resnet"})(0)[0]
    lmn = lm.build_schedule(cfg)(0)[0]
    assert lmn.n_params - res.n_params == sum(n - 1 for n in cfg["blocks"])
    stacks = [type(layer) for layer in lmn.layers if isinstance(layer, ResNetStack)]
    assert stacks == [LMStack, LMStack]
    sd_train, sd_eval = lm.build_schedule({**cfg, "model": "lm_resnet_sd"})(0)
    assert sd_train.needs_rng and not sd_eval.needs_rng
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    p = sd_eval.init(np.random.default_rng(1), np.float32)
    assert np.array_equal(sd_eval.forward(p, x)[0], sd_eval.forward(p, x)[0])  # expectation


def test_bad_settings_fail_before_compute(tmp_path, capsys):
    for over, text in [({"model": "densenet"}, "model"), ({"blocks": [2, 0]}, "blocks"),
                       ({"blocks": [1, 1, 1, 1, 1]}, "blocks"), ({"blocks": []}, "blocks"),
                       ({"survival_last": 0.0}, "survival_last"), ({"groups": 3}, "groups"),
                       ({"gate_level": "layer"}, "gate_level"), ({"k_init": [-2, 0]}, "k_init"),
                       ({"k_init": [0, -0.1]}, "k_init"), ({"lr": 0}, "lr")]:
        with pytest.raises(durable.ConfigError, match=text):
            lm.make_config(True, 0, over)
    with pytest.raises(durable.ConfigError, match="no setting 'solver'"):
        lm.make_config(True, 0, {"solver": "rk4"})
    argv = ["lm_resnet_classify", "--quick", "--out", str(tmp_path), "--set", "model=vgg",
            "--set", "data_dir=/nonexistent"]
    assert main(argv) == 2
    assert "model" in capsys.readouterr().err and not list(tmp_path.rglob("*.h5"))


def test_stochastic_depth_gates_come_from_the_loop_generator(tmp_path, idx_dir, monkeypatch):
    """Every gate draw uses the training loop's (checkpointed) generator: one draw per stack per
    step; validation and test draw none."""
    loops, draws = [], []
    real_fresh, real_draw = _image.fresh, nets.lm_resnet.draw_gates

    def fresh(*args, **kw):
        loops.append(real_fresh(*args, **kw))
        return loops[-1]

    def draw(rng, *args, **kw):
        draws.append(rng)
        return real_draw(rng, *args, **kw)

    monkeypatch.setattr(_image, "fresh", fresh)
    monkeypatch.setattr(nets.lm_resnet, "draw_gates", draw)
    assert lm.run(True, tmp_path, 0, overrides=tiny(idx_dir, model="lm_resnet_sd"),
                  options=QUIET) == 0
    assert len(draws) == 2 * 2 * 2                      # 2 epochs x 2 batches x 2 stacks
    assert all(rng is loops[0].rng for rng in draws)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, idx_dir):
    out = tmp_path_factory.mktemp("lm_ref")
    over = tiny(idx_dir, model="lm_resnet_sd")
    assert lm.run(True, out, 0, overrides=over, options=QUIET) == 0
    return results.find_runs(out)[0]


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_resume_with_stochastic_depth_is_bitwise(tmp_path, monkeypatch, idx_dir, reference,
                                                 crash_at):
    """Checkpoints 1 and 3 mid-epoch (the generator has drawn gates since the permutation), 2 at
    the end of epoch 1."""
    over = tiny(idx_dir, model="lm_resnet_sd")
    path = crash_and_resume(monkeypatch, tmp_path, lm.run, over, crash_at)
    assert_same_run(path, reference)


def test_full_configuration_and_registry():
    cfg = lm.make_config(False)
    assert (cfg["width"], cfg["blocks"], cfg["downsample"], cfg["epochs"], cfg["dataset"]) == (
        16, [4, 4], 2, 4, "fashion-mnist")
    assert lm.depth(cfg) == 19 and cfg["survival_last"] == 0.8
    assert lm.make_config(False, 0, {"dataset": "mnist"})["dataset"] == "mnist"
    for name in ("lm_resnet_classify",):
        assert name in registry.EXPERIMENTS and name in registry.CONFIGS
        assert name in registry.CHECKPOINTED
