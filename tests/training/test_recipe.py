"""The training recipe: the trainer's schedule, and the same schedule as torch objects."""

import pytest
import torch

from dm_search.training.config import OptimConfig
from dm_search.training.recipe import Recipe, lr_factor


def test_lr_schedules():
    multi = OptimConfig(schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    assert [lr_factor(multi, s, 100, 0) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = OptimConfig(schedule="cosine")
    assert lr_factor(cos, 50, 100, 0) == pytest.approx(0.5)
    assert lr_factor(cos, 0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(cos, 9, 100, 10) == pytest.approx(1.0)


@pytest.mark.parametrize("optim", [
    {"schedule": "cosine", "warmup_epochs": 2},
    {"schedule": "multistep", "milestones": [0.3, 0.6], "gamma": 0.2},
    {"schedule": "constant", "optimizer": "adamw", "lr": 0.001},
])
def test_the_scheduler_follows_the_trainers_schedule_step_for_step(optim):
    recipe = Recipe.from_config({"lr": 0.1, **optim}, epochs=10)
    model = torch.nn.Linear(2, 2)
    opt = recipe.optimizer(model.parameters())
    total = 10 * 7  # 10 epochs of 7 steps
    sched = recipe.scheduler(opt, total_steps=total)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warmup = round(recipe.optim.warmup_epochs * 7)
    assert seen == pytest.approx([recipe.lr * lr_factor(recipe.optim, s, total, warmup)
                                  for s in range(total)])
    assert type(opt).__name__.lower() == recipe.optim.optimizer


def test_a_recipe_round_trips_and_names_a_bad_field():
    recipe = Recipe.from_config({"lr": 0.02, "momentum": 0.9, "iterations": 500}, epochs=23)
    doc = recipe.to_dict()
    assert doc["epochs"] == 23 and doc["lr"] == 0.02 and "iterations" not in doc
    assert Recipe.from_dict(doc) == recipe
    assert "sgd lr 0.02, momentum 0.9" in recipe.describe() and "23 epochs" in recipe.describe()
    with pytest.raises(ValueError, match=r"recipe\.lr"):
        Recipe.from_dict({**doc, "lr": -1})
    with pytest.raises(ValueError, match=r"recipe\.epochs"):
        Recipe.from_dict({**doc, "epochs": 0})
    with pytest.raises(ValueError, match=r"unknown field.*learning_rate"):
        Recipe.from_dict({**doc, "learning_rate": 0.1})
