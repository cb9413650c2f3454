"""One trial-like process logging to a shared store (run by test_store_concurrency.py).

Usage: python concurrent_worker.py TRACKING_URI WORKER_INDEX EPISODES
Each worker also asks for the study's parent run, as workers started by hand would.
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from sweeper.tracking import ensure_parent_run
from sweeper.tracking.tracker import MlflowTracker


def main() -> None:
    uri, index, episodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    parent = ensure_parent_run("concurrent-study", tracking_uri=uri)
    cfg = OmegaConf.create(
        {
            "agent": {"name": "fake", "lr": 0.001 * (index + 1)},
            "env": {"name": "none"},
            "buffer": {"name": "none"},
            "train": {"episodes": episodes},
            "eval": {"objective": "final_eval_mean"},
            "seed": index,
            "trial": {
                "study_name": "concurrent-study",
                "number": index,
                "parent_run_id": parent,
                "storage": None,
            },
            "tracking": {"tracking_uri": uri, "experiment": None},
        }
    )
    tracker = MlflowTracker(cfg, None, mode="sync")  # the processes are the concurrency
    for ep in range(1, episodes + 1):
        tracker.on_episode_end(
            ep,
            ep * 10,
            {"return": float(ep + index), "length": 10, "epsilon": 0.5, "loss": 0.1, "max_q": 1.0},
        )
        if ep % 20 == 0:
            tracker.on_eval(
                ep // 20 - 1, ep, ep * 10, {"eval_return_mean": float(ep), "eval_return_std": 0.0}
            )
    tracker.on_train_end(float(episodes), "FINISHED")
    print(tracker.run_id, parent)


if __name__ == "__main__":
    main()
