"""A tiny Hydra app for sweeper tests: objective ``-(x - 1)^2 - y``, reported ``evals`` times.

The value grows towards the final one at each evaluation, so intermediate values rank trials
like their final values (the median pruner then surely prunes bad trials). It reuses the real
pruning callback of ``sweeper.pruning``.
"""

import math
import sys
import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="toy")
def main(cfg: DictConfig) -> float | None:
    callback = None
    if cfg.trial.number is not None:
        from sweeper.pruning import pruning_callback

        callback = pruning_callback(cfg.trial)
    final = -((float(cfg.x) - 1.0) ** 2) - float(cfg.y)
    if cfg.mode == "raise" or (cfg.mode == "raise_if_negative" and cfg.x < 0):
        raise RuntimeError(f"toy failure at x={cfg.x}")
    if cfg.mode == "exit":
        print("toy: config error: x is bad", file=sys.stderr)
        raise SystemExit(2)
    for i in range(cfg.evals):
        time.sleep(float(cfg.duration) / max(1, cfg.evals))
        value = final * (cfg.evals - i)  # approaches final from below (or above for >0)
        if callback is not None:
            callback.on_eval(i, i + 1, i + 1, {"eval_return_mean": value})
        if cfg.hang:
            time.sleep(3600)
    if cfg.mode == "return_nan":
        return math.nan
    if cfg.mode == "return_none":
        return None
    return final


if __name__ == "__main__":
    main()
