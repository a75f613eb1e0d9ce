"""Every claim of the reference report (`../shared/spec/`) as data, with the figure it gave.

A `Claim` compares side A with side B (filters on config columns) on a metric; `b=None` tests A's
metric against zero (the baseline's overfitting gap); `rivals` makes A "the best" of several
(A must beat each rival: an intersection-union test); `gap` judges |metric(level 1) −
metric(level 2)| per setting (robustness to the learning rate). `note` says where the reference's
own comparison changed more than one thing at once. The metric "gap" is train_eval_acc −
test_acc: both in eval mode, so dropout and augmentation do not lower the training side.
"""
from __future__ import annotations

from dataclasses import dataclass

ACC, LOSS, TRAIN_ACC = "final_test_acc", "final_test_loss", "final_train_acc"
_AN = {"transform": "augment+normalize"}
_REFERENCE_SETUP = ("the reference compared all data with the baseline's 50%, changing the data "
               "fraction and the transform at once")


@dataclass(frozen=True)
class Claim:
    """A claimed comparison: side A's metric is `better` ("higher"/"lower") than side B's."""

    text: str
    reference: str  # what the reference report says, with its figure
    a: dict
    b: dict | None = None
    metric: str = ACC
    better: str = "higher"
    free: tuple = ()  # config columns allowed to differ between the sides
    gap: tuple = ()  # (axis, level, level): judge |metric(level) − metric(level)| per setting
    rivals: tuple = ()  # A is best: it must beat every rival (side filters)
    note: str = ""
    tags: tuple = ()


def _metric_name(metric: str) -> str:
    return {ACC: "test accuracy", LOSS: "test loss", TRAIN_ACC: "training accuracy"}[metric]


def _both(text, refs, a, b, **kw) -> list[Claim]:
    """The claim on test accuracy and on test loss (lower is better)."""
    return [Claim(f"{text} on {_metric_name(m)}", ref, a, b, metric=m,
                  better="higher" if m == ACC else "lower", **kw)
            for m, ref in zip((ACC, LOSS), refs)]


def _transform_claims() -> list[Claim]:
    figures = {"augment": ("43% → 46%", "1.62 → 1.54"), "normalize": ("43% → 51%", "1.6 → 1.4"),
               "augment+normalize": ("highest of the four", "lowest, 1.5")}
    out = []
    for level, name in (("augment", "augmentation"), ("normalize", "normalisation"),
                        ("augment+normalize", "augmentation + normalisation")):
        out += _both(f"{name} beats the baseline (the reference's setup)", figures[level],
                     {"transform": level, "data_fraction": 1.0},
                     {"transform": "none", "data_fraction": 0.5}, note=_REFERENCE_SETUP)
        out += _both(f"{name} beats no transform at equal data", figures[level],
                     {"transform": level}, {"transform": "none"})
    rivals = tuple({"transform": t} for t in ("none", "augment", "normalize"))
    for metric, ref in ((ACC, "highest of the four"), (LOSS, "lowest of the four (1.5)"),
                        (TRAIN_ACC, "\"true even for training\"")):
        out.append(Claim(f"augmentation + normalisation is the best transform on "
                         f"{_metric_name(metric)}", ref, dict(_AN), rivals=rivals, metric=metric,
                         better="lower" if metric == LOSS else "higher",
                         note="training accuracy in train mode, as the reference measured it"
                         if metric == TRAIN_ACC else ""))
    return out


_DROP, _BASE_NET = {"model": "dropout"}, {"model": "baseline"}
_L1, _L2 = {"regulariser": "l1", "model": "baseline"}, {"regulariser": "l2", "model": "baseline"}
_DROPOUT_ONLY = {"regulariser": "none", "model": "dropout"}
_THREE = ("the reference compared dropout on augment+normalize with all data against the "
          "baseline (no transform, 50%); here only the network differs")


def _regulariser_claims() -> list[Claim]:
    return [
        Claim("the baseline overfits (eval-mode train − test accuracy gap > 0)",
              "\"clearly overfits\" (no figure)", {"transform": "none", "data_fraction": 0.5,
                                                   "model": "baseline", "regulariser": "none"},
              metric="gap"),
        Claim("dropout narrows the train − test gap (eval mode)", "train 42% / test 50%",
              _DROP, _BASE_NET, metric="gap", better="lower", note=_THREE),
        *_both("dropout beats the same network without it", ("42% → 50%", "1.62 → 1.44"),
               _DROP, _BASE_NET, note=_THREE),
        *_both("dropout beats L1", ("50% vs 48%", "1.44 vs 1.46"), _DROPOUT_ONLY, _L1,
               free=("lam",)),
        *_both("L2 beats L1", ("55% vs 48%", "1.2 vs 1.4"), _L2, _L1),
        *_both("L2 beats dropout", ("55% vs 50%", "1.2 vs 1.4"), _L2, _DROPOUT_ONLY,
               free=("lam",)),
    ]


def _optimiser_claims() -> list[Claim]:
    adam = {"optimiser": "adam"}
    rivals = ({"optimiser": "adam", "lr": 1e-3}, {"optimiser": "adam", "lr": 1e-5},
              {"optimiser": "sgd", "lr": 1e-5})
    return [
        *_both("Adam at lr 1e-5 beats Adam at lr 1e-3", ("58% vs 56%", "1.17 vs 2.44"),
               {**adam, "lr": 1e-5}, {**adam, "lr": 1e-3}),
        *[Claim(f"SGD is more robust to the learning rate than Adam on {_metric_name(m)} "
                "(smaller |lr 1e-3 − lr 1e-5| difference)", ref, {"optimiser": "sgd"},
                {"optimiser": "adam"}, metric=m, better="lower", gap=("lr", 1e-3, 1e-5))
          for m, ref in ((ACC, "SGD 58.3 → 58.1 vs Adam 58 → 56"),
                         (LOSS, "SGD 1.166 → 1.164 vs Adam 1.17 → 2.44"))],
        Claim("SGD at lr 1e-3 is the best of the four optimiser settings", "58.3% (highest)",
              {"optimiser": "sgd", "lr": 1e-3}, rivals=rivals),
    ]


CLAIMS: tuple[Claim, ...] = (*_transform_claims(), *_regulariser_claims(), *_optimiser_claims())
RELU_CLAIMS: tuple[Claim, ...] = tuple(
    Claim(f"removing the ReLU on the logits improves {_metric_name(m)}", "— (the reference "
          "keeps it)", {"final_relu": False}, {"final_relu": True}, metric=m,
          better="higher" if m == ACC else "lower", tags=("relu",)) for m in (ACC, LOSS))
