"""Do independent runs of the main job agree? The check behind the README's sensitivity rows.

Run from the repository root, after running ``python -m sweeper.train +sweep=sensitivity
seed=S`` for several sweep seeds S (disjoint tuning seeds) into one journal::

    .venv/bin/python tests/benchmarks/sensitivity_agreement.py outputs/optuna/journal.log

Not collected by pytest (no ``test_`` prefix). For each study of the journal and each measure
(the seed's, mean episode length over the last 50 episodes; and the greedy evaluation return)
it prints the decomposition's verdict line (``sweeper.decomposition_verdict``, as the sweep's
summary prints it), then across the studies:

* **contradictions**: a pair (two hyperparameters, or one and the seed) decided one way in one
  run and the other way in another (must be none);
* **borderline**: a pair decided in some runs and a tie in others;
* **the seed's share**: whether every two runs' CIs overlap;
* **calibration**: for each share, in how many runs its 95% CI covers the mean of all runs'
  estimates (the README asks for at least 4 of 5).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import optuna

from sweeper import analysis
from sweeper.decomposition_verdict import answer, percent
from sweeper.variance_decomposition import INTERACTIONS, SEED

PARAMS = ["agent.lr", "agent.target_update_freq", "buffer.capacity"]
MEASURES = (("last50_length", "the seed's measure"), ("objective", "the greedy evaluation return"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("journal", help="the journal file the sweeps wrote (outputs/optuna/...)")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(args.journal)
    )
    studies = [
        optuna.load_study(study_name=s.study_name, storage=storage)
        for s in optuna.get_all_study_summaries(storage)
        if s.study_name.startswith("sensitivity-")
    ]
    for metric, label in MEASURES:
        print(f"\n== {label} ({metric}) ==")
        runs = []
        for study in studies:
            seed = study.user_attrs.get("sweeper:replicate_seeds", {}).get("sweep_seed")
            imp = analysis.importance(study, PARAMS, metric=metric)
            d = imp.decomposition
            if d is None:
                print(f"{study.study_name}: not a full grid ({imp.reason})")
                continue
            runs.append((seed, d))
            print(f"seed={seed}: {answer(d).line}")
        if len(runs) < 2:
            continue
        report(runs)


def report(runs) -> None:
    names = [*PARAMS, SEED]
    decided: dict[tuple[str, str], list[int]] = {}
    for a, b in itertools.combinations(names, 2):
        signs = []
        for _, d in runs:
            diff = d.difference(a, b)
            signs.append(0 if not diff.excludes_zero() else (1 if diff.value > 0 else -1))
        decided[(a, b)] = signs
    contradictions = [p for p, s in decided.items() if 1 in s and -1 in s]
    borderline = [p for p, s in decided.items() if 0 in s and any(s)]
    print("contradictions:", contradictions or "none")
    for (a, b), s in decided.items():
        words = {1: f"{a} > {b}", -1: f"{b} > {a}", 0: "tie"}
        kind = "borderline" if (a, b) in borderline else "always" if all(s) else "never decided"
        print(
            f"  {a} vs {b}: {kind}: "
            + ", ".join(f"seed={r[0]} {words[x]}" for r, x in zip(runs, s))
        )
    seeds = [d.shares[SEED] for _, d in runs]
    overlap = all(x.low <= y.high and y.low <= x.high for x, y in itertools.combinations(seeds, 2))
    print("the seed's share CIs all overlap:", overlap)
    print("calibration (runs whose 95% CI covers the mean of the runs' estimates):")
    for name in [*PARAMS, INTERACTIONS, SEED]:
        values = [d.shares[name] for _, d in runs]
        mean = float(np.mean([v.value for v in values]))
        covered = sum(v.low <= mean <= v.high for v in values)
        cis = "; ".join(f"{percent(v.value)} [{percent(v.low)}, {percent(v.high)}]" for v in values)
        print(f"  {name}: mean {percent(mean)}%, covered in {covered} of {len(values)} ({cis})")


if __name__ == "__main__":
    main()
