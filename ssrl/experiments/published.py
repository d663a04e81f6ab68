"""Published DMC pixel-control scores that ``ssrl report`` puts beside your runs.

One place for the numbers: the CURL paper's Table 1 (Srinivas, Laskin & Abbeel, "CURL: Contrastive Unsupervised
Representations for Reinforcement Learning", ICML 2020, arXiv:2004.04136), mean episode return over 10 seeds on
the six PlaNet tasks at 100k and 500k environment frames (action repeat included; the repeats are those of
``ssrl.experiments.suites``' ``dmc100k``). Copied from ``shared/reference/README.md``; that reference holds the
500k column for CURL only, so the other methods appear at 100k.
"""

from __future__ import annotations

CITATION = ("Srinivas, Laskin & Abbeel (2020), CURL: Contrastive Unsupervised Representations for Reinforcement "
            "Learning, ICML, Table 1 (mean over 10 seeds)")

# {(method, frames): {task: mean return, as printed in the paper}}; tasks are ssrl env ids.
CURL_TABLE: dict[tuple[str, int], dict[str, int]] = {
    ("CURL", 100_000): {"dmc/finger-spin": 767, "dmc/cartpole-swingup": 582, "dmc/reacher-easy": 538,
                        "dmc/cheetah-run": 299, "dmc/walker-walk": 403, "dmc/ball_in_cup-catch": 769},
    ("CURL", 500_000): {"dmc/finger-spin": 926, "dmc/cartpole-swingup": 841, "dmc/reacher-easy": 929,
                        "dmc/cheetah-run": 518, "dmc/walker-walk": 902, "dmc/ball_in_cup-catch": 959},
    ("SAC+AE", 100_000): {"dmc/finger-spin": 740, "dmc/cartpole-swingup": 311, "dmc/reacher-easy": 274,
                          "dmc/cheetah-run": 267, "dmc/walker-walk": 394, "dmc/ball_in_cup-catch": 391},
    ("Dreamer", 100_000): {"dmc/finger-spin": 341, "dmc/cartpole-swingup": 326, "dmc/reacher-easy": 314,
                           "dmc/cheetah-run": 235, "dmc/walker-walk": 277, "dmc/ball_in_cup-catch": 246},
    ("state SAC", 100_000): {"dmc/finger-spin": 811, "dmc/cartpole-swingup": 835, "dmc/reacher-easy": 746,
                             "dmc/cheetah-run": 616, "dmc/walker-walk": 891, "dmc/ball_in_cup-catch": 746},
}


def column(method: str, frames: int) -> str:
    """The table's column name for one published entry, e.g. ``CURL 100k``."""
    return f"{method} {frames // 1000}k"
