"""Learning-rate schedules come from transformers (`get_scheduler`), under the config's names;
the default (linear, no warm-up) is the multiplier (T − s) / T every record was trained with,
to the bit, so records stay bit-identical."""
from __future__ import annotations

import pytest
import torch

from fdapt_core.config.sections import TrainConfig
from fdapt_core.fl.local import lr_factor, make_scheduler


def _factors(cfg: TrainConfig, total: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_scheduler(opt, cfg, total)
    out = []
    for _ in range(total + 2):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_the_default_schedule_is_the_one_every_record_was_trained_with():
    total = 37
    got = _factors(TrainConfig(), total)
    assert got == [max(0.0, (total - s) / total) for s in range(total + 2)]  # exact
    assert [lr_factor(s, TrainConfig(), total) for s in range(total + 2)] == got


@pytest.mark.parametrize("schedule", ["linear", "constant", "cosine"])
def test_every_schedule_warms_up_from_zero_then_follows_its_shape(schedule):
    cfg = TrainConfig(schedule=schedule, warmup_steps=4)
    f = _factors(cfg, 20)
    assert f[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    end = {"linear": 0.0, "constant": 1.0, "cosine": 0.0}[schedule]
    assert f[20] == pytest.approx(end, abs=1e-12)
    assert all(a >= b for a, b in zip(f[4:20], f[5:21]))  # never rises after the warm-up


def test_an_unknown_schedule_is_refused_by_the_config():
    from fdapt_core.config.run import build_config
    from fdapt_core.errors import ConfigError

    with pytest.raises(ConfigError, match="train.schedule"):
        build_config({}, ["train.schedule=step"])
