"""A study hook for tests: records start/end in files and hands out a parent run id."""

from pathlib import Path

from sweeper.sweeps.hooks import StudyHook


class ProbeHook(StudyHook):
    def on_study_start(self, info):
        Path(info.sweep_dir).mkdir(parents=True, exist_ok=True)
        (Path(info.sweep_dir) / "hook_start.txt").write_text(info.study_name)
        return "parent-123"

    def on_study_end(self, info, results):
        best = results["best"]["value"] if results.get("best") else None
        (Path(info.sweep_dir) / "hook_end.txt").write_text(f"{results['study'].study_name} {best}")


def factory(task_cfg):
    return ProbeHook()
