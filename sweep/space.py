"""The grid and the search space as plain data; entry points only translate them.

`expand_grid` turns axis lists into trial dicts (lam collapses to 0.0 where the regulariser is
none, so no duplicate trials), `seed_preset` lists the seed report's runs with the experiment each
reproduces, and SEARCH_RANGES holds Optuna's default log-uniform ranges.
"""
from __future__ import annotations

import itertools

from cifar_core.config import (AXES, FIELDS, MODELS, OPTIMISERS, REGULARISERS, SCALARS, TRANSFORMS,
                               TrialConfig)

# AXES: what a grid can vary (comma lists on the command line), SCALARS: one value per sweep;
# both are TrialConfig's fields by kind (cifar_core.config), in its order.
DEFAULT_GRID = {  # the reference's full study: 4 x 2 x 3 x 2 x 2 = 96 trials; any other axis
    **{axis: [FIELDS[axis].default] for axis in AXES},  # stays at TrialConfig's default
    "transform": list(TRANSFORMS),
    "model": list(MODELS),
    "regulariser": list(REGULARISERS),
    "optimiser": list(OPTIMISERS),
    "lr": [1e-3, 1e-5],
}
DEFAULT_SCALARS = {scalar: FIELDS[scalar].default for scalar in SCALARS}

SMOKE_GRID = dict(DEFAULT_GRID, transform=["augment+normalize"], model=["baseline"],
                  regulariser=["none"], optimiser=["adam", "sgd"], lr=[1e-3], data_fraction=[0.02])
SMOKE_SCALARS = {"epochs": 1, "batch_size": 256}

# Optuna's default ranges (log-uniform); lam is only sampled for l1/l2 trials.
SEARCH_RANGES = {"lr": (1e-5, 1e-1), "lam": (1e-6, 1e-1)}
SEARCHABLE_CATEGORICALS = ("transform", "model", "regulariser", "optimiser", "final_relu")

# The seed report's runs. Where the seed is silent the baseline trains with Adam at 1e-3.
# Dropout, L1, L2 and the optimiser exercise all ran on the augment+normalize data with all
# training samples; the L1/L2 and optimiser runs used Custom_Network (no dropout), and the
# optimiser exercise kept regulariser='L2' from the cell before it.
_AUG_NORM = {"transform": "augment+normalize", "data_fraction": 1.0}
SEED_EXPERIMENTS = [
    ("baseline", "Step 5: Custom_Network, no transform, 50% of the training data",
     {"transform": "none", "data_fraction": 0.5}),
    ("control", "Control, not in the seed: no transform, all data (transforms at equal data)",
     {"transform": "none", "data_fraction": 1.0}),
    ("augment", "Exercise 1: the five augmentations, all data", {"transform": "augment"}),
    ("normalize", "Exercise 1: normalisation only, all data", {"transform": "normalize"}),
    ("augment+normalize", "Exercise 1: augmentation and normalisation", dict(_AUG_NORM)),
    ("dropout", "Exercise 2: Net_dropout on the augment+normalize data",
     dict(_AUG_NORM, model="dropout")),
    ("l1", "Bonus: L1 penalty (lambda 1e-3), Custom_Network", dict(_AUG_NORM, regulariser="l1")),
    ("l2", "Bonus: L2 penalty (lambda 1e-3), Custom_Network", dict(_AUG_NORM, regulariser="l2")),
] + [
    (f"{opt}-{lr:.0e}".replace("e-0", "e-"),
     f"Exercise 3: {opt.upper() if opt == 'sgd' else 'Adam'} at lr {lr:g} (L2 kept)",
     dict(_AUG_NORM, regulariser="l2", optimiser=opt, lr=lr))
    for opt in ("adam", "sgd") for lr in (1e-3, 1e-5)
]


def expand_grid(axes: dict, *, seeds: int, epochs: int, batch_size: int) -> list[dict]:
    """Every combination of the axis lists x seeds 0..seeds-1, validated and de-duplicated."""
    unknown = sorted(set(axes) - set(AXES))
    assert not unknown, f"unknown grid axes {unknown}"
    names = list(AXES)
    trials: dict[tuple, dict] = {}
    for values in itertools.product(*(axes[n] for n in names), range(seeds)):
        cfg = dict(zip(names, values[:-1]), seed=values[-1], epochs=epochs, batch_size=batch_size)
        trial = canonical_trial(cfg)
        trials.setdefault(trial_key(trial), trial)
    return list(trials.values())


def seed_preset(*, seeds: int, epochs: int, batch_size: int, final_relu=(True,)) -> list[dict]:
    """The seed report's runs x final_relu x seeds; a config two experiments share runs once,
    both labels kept. final_relu (True, False) runs each experiment faithful and corrected."""
    trials: dict[tuple, dict] = {}
    for seed, relu in itertools.product(range(seeds), final_relu):
        for label, _, overrides in SEED_EXPERIMENTS:
            cfg = dict(overrides, seed=seed, epochs=epochs, batch_size=batch_size, final_relu=relu)
            trial = canonical_trial(cfg)
            key = trial_key(trial)
            if key in trials:
                trials[key]["label"] += "|" + label
            else:
                trials[key] = dict(trial, label=label)
    return list(trials.values())


def canonical_trial(cfg: dict) -> dict:
    """A validated trial dict (TrialConfig's spelling); lam is 0.0 when no penalty is applied."""
    trial = TrialConfig.from_dict(cfg).to_dict()
    if trial["regulariser"] == "none":
        trial["lam"] = 0.0
    return trial


def trial_key(trial: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in trial.items() if k != "label"))


def describe(trial: dict) -> str:
    """One human line of a trial's settings."""
    parts = [f"{k}={trial[k]:g}" if isinstance(trial[k], float) else f"{k}={trial[k]}"
             for k in (*AXES, "seed", *SCALARS) if k in trial]
    return " ".join(parts)
