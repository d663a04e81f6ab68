"""Published DMC scores that ``ssrl report`` puts beside your runs.

One place for the numbers, each the mean episode return at 100k (or 500k) environment frames, action repeat
included, on the six PlaNet tasks:

- the CURL paper's Table 1 (Srinivas, Laskin & Abbeel, "CURL: Contrastive Unsupervised Representations for
  Reinforcement Learning", ICML 2020, arXiv:2004.04136), 10 seeds, with the action repeats of
  ``ssrl.experiments.suites``' ``dmc100k``; the shared reference holds its 500k column for CURL only;
- MR.Q (Fujimoto et al., "Towards General-Purpose Model-Free Reinforcement Learning", ICLR 2025), the means of
  the authors' per-seed results (facebookresearch/MRQ, ``results/dmc_results.txt`` and
  ``dmc-visual_results.txt``), 10 seeds, action repeat 2 on every task, one hyper-parameter set.

Copied from ``shared/reference/README.md``.
"""

from __future__ import annotations

CURL_CITATION = ("Srinivas, Laskin & Abbeel (2020), CURL: Contrastive Unsupervised Representations for Reinforcement "
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


MRQ_CITATION = ("Fujimoto et al. (2025), Towards General-Purpose Model-Free Reinforcement Learning (MR.Q), ICLR; "
                "facebookresearch/MRQ results, mean over 10 seeds, action repeat 2")
MRQ_TABLE: dict[tuple[str, int], dict[str, int]] = {
    ("MR.Q state", 100_000): {"dmc/finger-spin": 733, "dmc/cartpole-swingup": 853, "dmc/reacher-easy": 940,
                              "dmc/cheetah-run": 648, "dmc/walker-walk": 891, "dmc/ball_in_cup-catch": 965},
    ("MR.Q pixels", 100_000): {"dmc/finger-spin": 744, "dmc/cartpole-swingup": 477, "dmc/reacher-easy": 449,
                               "dmc/cheetah-run": 254, "dmc/walker-walk": 568, "dmc/ball_in_cup-catch": 194},
}

# Every published column ``ssrl report`` shows, and where each comes from.
TABLE: dict[tuple[str, int], dict[str, int]] = CURL_TABLE | MRQ_TABLE
CITATION = f"{CURL_CITATION}; {MRQ_CITATION}"


def column(method: str, frames: int) -> str:
    """The table's column name for one published entry, e.g. ``CURL 100k``."""
    return f"{method} {frames // 1000}k"
