"""A run that outlives its process is closed: KILLED, by a guard process that waits for it.

A trial's run is closed by its logging child when the trial dies (end of input on the child's
stdin, ``sweeper.tracking.worker``). The study's parent run is the sweeper's own: when the
sweeper is killed (kill -9, the OOM killer), nothing would ever end it and the MLflow UI would
show the study RUNNING forever. So the sweeper starts this guard beside the parent run: the
guard blocks on its stdin, costs nothing while it waits (mlflow is imported only if needed),
and when the sweeper's end of the pipe closes without a ``release``, ends the run KILLED with
``error`` tag, if it is still RUNNING. A resumed sweep reopens the same
parent run (``ensure_parent_run``), so the KILLED status is temporary for a study that goes on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys


class RunGuard:
    """The sweeper's handle: ``release()`` when the run was closed normally."""

    def __init__(self, run_id: str, tracking_uri: str) -> None:
        from sweeper.tracking.worker import child_env

        env = child_env()  # MLflow's HTTP limits: a dead server does not keep us for minutes
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sweeper.tracking.run_guard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=None,
            text=True,
            env=env,
        )
        assert self.proc.stdin is not None
        # the URI as given (maybe masked): the guard reveals it from the inherited environment
        self.proc.stdin.write(json.dumps({"run_id": run_id, "uri": tracking_uri}) + "\n")
        self.proc.stdin.flush()

    def release(self) -> None:
        """The run was ended by its owner: the guard exits without touching it."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("release\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweeper's; we outlive it
    spec = json.loads(sys.stdin.readline() or "{}")
    released = any(line.strip() == "release" for line in sys.stdin)
    if released or not spec.get("run_id"):
        return
    import logging

    from sweeper.secrets import mask_text
    from sweeper.tracking import store

    logging.getLogger("urllib3").setLevel(logging.ERROR)  # one line below, not a retry log
    try:
        client = store.client(spec.get("uri"))
        run = store.retry(client.get_run, spec["run_id"])
        if run.info.status == "RUNNING":
            why = "the sweeper ended without closing this run"
            store.retry(client.set_tag, spec["run_id"], "error", why)
            store.retry(client.set_terminated, spec["run_id"], "KILLED")
    except Exception as err:  # noqa: BLE001 - the store is gone too: say so, once
        text = " ".join(mask_text(f"{type(err).__name__}: {err}").split())[:300]
        print(f"sweeper: could not end the study's parent run: {text}", file=sys.stderr)


if __name__ == "__main__":
    main()
