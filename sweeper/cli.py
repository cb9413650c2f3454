"""The ``sweeper`` command: config hashes, reproducing runs, study reports, the MLflow UI.

    sweeper hash [OVERRIDES...]        print the config hash (composes the config, no training)
    sweeper reproduce HASH             re-run the config of a tracked run, compare final metrics
    sweeper report [--study NAME]      top trials, best config as overrides, importances, plots
    sweeper retest --study NAME        re-train the best configs on unseen test seeds
    sweeper studies [--storage URL]    the studies of a storage: trials, best value, activity
    sweeper eval RUN [--episodes N]    greedy episodes of a saved agent (dir, run id or hash)
    sweeper ui [--port 5000] [--open]  the MLflow UI over the embedded store, and the link to
                                       the newest study's trials

The tracking store is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded
``sqlite:///<cwd>/outputs/mlflow.db``. Heavy imports (mlflow, optuna, torch) happen inside the
subcommands that need them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from sweeper.messages import one_line


def fail(message: str, code: int = 1) -> int:
    print(f"sweeper: {message}", file=sys.stderr)
    return code


# -- hash ---------------------------------------------------------------------------------
def compose(overrides: list[str]):
    """The task config for ``overrides`` via Hydra's compose API (no run dir, no training),
    passwords masked."""
    from sweeper.config import compose_config

    return compose_config(overrides, mask_secrets=True)


def cmd_hash(args) -> int:
    from sweeper.config_hash import canonical_json, config_hash

    try:
        cfg = compose(args.overrides)
    except Exception as err:  # hydra's override / composition errors: one line
        from sweeper.secrets import mask_text

        return fail(f"hash: {one_line(mask_text(err))}", 2)
    if args.json:
        print(canonical_json(cfg))
    print(config_hash(cfg))
    return 0


# -- reproduce ----------------------------------------------------------------------------
def read_client(tracking_uri: str | None):
    """An MlflowClient for a command that only reads: an embedded store that does not exist
    is an error (LookupError, one line), never created."""
    from sweeper.tracking import store

    uri = store.resolve_tracking_uri(tracking_uri)
    path = store.sqlite_path(uri)
    if path is not None and not path.is_file():
        raise LookupError(f"no MLflow store at {path} (nothing tracked here yet; --tracking-uri)")
    return store.client(uri)


def history_prefix_diffs(client, original, reproduced_id: str) -> list[str]:
    """Differences between the metric histories of an unfinished (pruned, failed) original
    run and its re-run, over the steps the original reached: a pruned trial stopped early, so
    its final metrics have nothing to compare with; its history up to the stop must match."""
    from sweeper.tracking import store

    diffs = []
    for key in sorted(original.data.metrics):
        before = store.retry(client.get_metric_history, original.info.run_id, key)
        after = {
            m.step: m.value for m in store.retry(client.get_metric_history, reproduced_id, key)
        }
        for m in before:
            b = after.get(m.step)
            if b is None or not (m.value == b or (m.value != m.value and b != b)):
                diffs.append(
                    f"{key} at step {m.step}: {m.value!r} (original) vs {b!r} (reproduced)"
                )
                break
    return diffs


def compare_metrics(original: dict, reproduced: dict) -> list[str]:
    """Differences between two runs' final metrics (exact float comparison)."""
    diffs = []
    for key in sorted(set(original) | set(reproduced)):
        a, b = original.get(key), reproduced.get(key)
        if a is None or b is None:
            diffs.append(
                f"{key}: {'missing' if a is None else repr(a)} (original) vs "
                f"{'missing' if b is None else repr(b)} (reproduced)"
            )
        elif not (a == b or (a != a and b != b)):  # NaN == NaN here
            diffs.append(f"{key}: {a!r} (original) vs {b!r} (reproduced), delta {b - a:+.3g}")
    return diffs


def cmd_reproduce(args) -> int:
    prefix = args.hash.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{1,64}", prefix):
        return fail(f"reproduce: {args.hash!r} is not a config hash (hex digits)")
    import datetime
    import tempfile

    from omegaconf import OmegaConf
    from rich.table import Table

    from sweeper.config import ConfigError, validate
    from sweeper.config_hash import SHORT, config_hash
    from sweeper.console import console as sweeper_console
    from sweeper.tracking import store
    from sweeper.tracking.tracker import MlflowTracker

    try:
        client = read_client(args.tracking_uri)
        original, digest = store.find_original(client, prefix)
    except (LookupError, ValueError) as err:  # ValueError: a masked URL with no known password
        return fail(f"reproduce: {one_line(err)}")
    outcome = original.data.tags.get("outcome", "finished")
    run_id = original.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = store.retry(client.download_artifacts, run_id, "config.yaml", tmp)
        except Exception as err:  # noqa: BLE001
            return fail(f"reproduce: run {run_id} has no config.yaml artifact ({err})")
        cfg = OmegaConf.load(path)
    # The exact semantic config, seed included; no sweeper bookkeeping, same store.
    from sweeper.schema import TrialConfig

    trial = cfg.get("trial") or {}
    cfg.trial = OmegaConf.structured(TrialConfig)  # no sweeper bookkeeping ...
    cfg.trial.seeds = trial.get("seeds")  # ... but a replicate group stays one
    cfg.trial.aggregate = trial.get("aggregate", "iqm")
    from sweeper import secrets

    cfg.tracking.tracking_uri = secrets.keep(client.tracking_uri)  # config.yaml: masked
    cfg.tracking.enabled = True
    cfg.train.progress = False
    problems = []
    if config_hash(cfg) != digest:
        problems.append(
            f"config.yaml of run {run_id} hashes to {config_hash(cfg)[:SHORT]}, "
            f"its tag says {digest[:SHORT]}"
        )
    stamp = datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    out_root = Path(args.output_dir) if args.output_dir else store.outputs_dir() / "reproduce"
    output_dir = out_root / f"{stamp}_{digest[:SHORT]}"
    console = sweeper_console()
    console.print(
        f"reproducing run {run_id} (config {digest[:SHORT]}, seed {cfg.seed}) in {output_dir}",
        highlight=False,
        soft_wrap=True,
    )
    from sweeper.train import execute

    try:
        validate(cfg)
        tracker = MlflowTracker(
            cfg,
            output_dir,
            experiment_id=original.info.experiment_id,
            extra_tags={"reproduced_from": run_id},
        )
    except ConfigError as err:
        return fail(f"reproduce: config error: {err}", 2)
    from sweeper.secrets import mask_text

    original_error = original.data.tags.get("error")
    try:
        execute(cfg, output_dir, [tracker])
    except BaseException as exc:
        if not isinstance(exc, Exception):
            raise
        error = mask_text(f"{type(exc).__name__}: {exc}")
        if outcome != "failed":
            problems.append(f"the reproduced run raised {error}")
        elif original_error is not None and error != original_error:  # fail the same way
            problems.append(
                f"the original failed with {original_error!r}, the re-run with {error!r}"
            )
    else:
        if outcome == "failed":
            problems.append(f"the original failed ({original_error}), the re-run finished")
    if outcome in ("pruned", "failed", "killed"):
        # stopped early: compare the metric histories up to where the original stopped
        diffs = history_prefix_diffs(client, original, tracker.run_id)
        for p in problems + diffs:
            print(f"  {p}")
        if problems or diffs:
            console.print(f"[red]not reproduced[/red]: {len(problems) + len(diffs)} difference(s)")
            return 1
        console.print(
            f"reproduced: the original run was {outcome}; every metric it logged is "
            "bit-identical in the re-run at the same steps"
        )
        return 0
    before = store.retry(client.get_run, run_id).data.metrics
    after = store.retry(client.get_run, tracker.run_id).data.metrics
    table = Table(
        title=f"final metrics: original {run_id} vs reproduced {tracker.run_id}",
        title_justify="left",
    )
    for col in ("metric", "original", "reproduced", "match"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        same = a is not None and b is not None and (a == b or (a != a and b != b))
        table.add_row(
            key,
            "-" if a is None else repr(a),
            "-" if b is None else repr(b),
            "yes" if same else "[red]NO[/red]",
        )
    console.print(table)
    problems += compare_metrics(before, after)
    if problems:
        console.print(f"[red]not reproduced[/red]: {len(problems)} difference(s)")
        for p in problems:
            print(f"  {p}")
        return 1
    console.print("reproduced: all final metrics are bit-identical")
    return 0


# -- report -------------------------------------------------------------------------------
def cmd_report(args) -> int:
    from sweeper.tracking import store
    from sweeper.tracking.report import ReportError, build_report, load_study, print_report

    try:
        study = load_study(args.study, args.storage)
    except ReportError as err:
        return fail(f"report: {err}")
    plots = Path(args.out) if args.out else store.outputs_dir() / "reports" / study.study_name
    report = build_report(
        study,
        top=args.top,
        plots_dir=None if args.no_plots else plots,
        html=True if args.html else None,  # else $SWEEPER_PLOTLY_HTML decides (off by default)
        n_bootstrap=args.bootstrap,
    )
    print_report(report)
    return 0


def cmd_studies(args) -> int:
    from sweeper.tracking.report import ReportError, open_storage_to_read
    from sweeper.tracking.studies import print_studies, study_rows

    try:
        storage, label = open_storage_to_read(args.storage)
    except ReportError as err:
        return fail(f"studies: {err}")
    rows = study_rows(storage)
    if not rows:
        print(f"no study in {label}")
        return 0
    print_studies(rows, label)
    return 0


def cmd_eval(args) -> int:
    from sweeper.evaluate import EvalError, evaluate, find_run_dir, load, print_evaluation

    try:
        saved = load(find_run_dir(args.run, args.tracking_uri))
        result = evaluate(saved, args.episodes)
    except (EvalError, ValueError) as err:  # ValueError: e.g. a masked tracking URI
        return fail(f"eval: {one_line(err)}")
    print_evaluation(result)
    return 0


# -- retest -------------------------------------------------------------------------------
def cmd_retest(args) -> int:
    """Re-train a study's best ``--top`` configs on ``--seeds`` unseen test seeds
    (``sweeper.sweeps.retest_runs``): exit 0 when every run finished, 1 when some failed."""
    import signal

    from sweeper import analysis
    from sweeper.sweeps import retest_runs
    from sweeper.tracking.report import ReportError, load_study

    try:
        study = load_study(args.study, args.storage)
        plan = retest_runs.plan(
            study,
            args.top,
            args.seeds,
            tracking_uri=args.tracking_uri,
            out_dir=Path(args.out) if args.out else None,
        )
    except (ReportError, retest_runs.RetestError) as err:
        return fail(f"retest: {err}")
    where = f"under parent run {plan.parent_run_id}" if plan.parent_run_id else "top-level"
    tracked = f"MLflow runs {where}" if plan.tracking_uri else "MLflow off"
    print(
        f"re-testing the best {len(plan.trials)} config(s) of study {study.study_name} "
        f"(trials {', '.join(str(t.number) for t in plan.trials)}) on {len(plan.seeds)} test "
        f"seeds: {len(plan.jobs)} runs, {args.jobs} at a time, in {plan.out_dir / 'test'} "
        f"({tracked})",
        file=sys.stderr,
        flush=True,
    )
    done = [0]

    def report(job) -> None:
        done[0] += 1
        state = "finished" if job.returncode == 0 else f"failed (exit code {job.returncode})"
        print(
            f"[{done[0]}/{len(plan.jobs)}] trial {job.trial}, seed {job.seed}: {state}",
            file=sys.stderr,
            flush=True,
        )

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        retest_runs.run_jobs(plan.jobs, args.jobs, on_done=report)
    except KeyboardInterrupt:
        return fail(
            f"retest: interrupted after {done[0]} of {len(plan.jobs)} runs; the running ones "
            "were stopped, nothing was stored in the study",
            130,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    retest_runs.read_results(plan)
    summary, figure = retest_runs.finish(plan)
    for line in analysis.retest_lines(summary):
        print(line)
    print(f"stored in study {study.study_name} (user attr {analysis.RETEST_ATTR})")
    print(f"figure: {figure}")
    failed = [j for j in plan.jobs if j.error is not None]
    if failed:
        print(
            f"sweeper: retest: {len(failed)} of {len(plan.jobs)} test runs failed:", file=sys.stderr
        )
        for j in failed:
            print(f"  trial {j.trial}, seed {j.seed}: {j.error} (log: {j.log})", file=sys.stderr)
        return 1
    return 0


# -- ui -----------------------------------------------------------------------------------
def ui_command(tracking_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    from sweeper.tracking import store

    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    path = store.sqlite_path(tracking_uri)
    if path is not None:
        cmd += ["--artifacts-destination", str(path.parent / store.ARTIFACTS_DIR)]
    return cmd


def cmd_ui(args) -> int:
    import os
    import signal
    import subprocess

    from sweeper.secrets import mask, mask_text
    from sweeper.tracking import store

    try:
        uri = store.resolve_tracking_uri(args.tracking_uri)
    except ValueError as err:  # a masked URL with no known password
        return fail(f"ui: {one_line(err)}")
    from sweeper.tracking.ui import landing_urls

    served = uri.startswith(("http://", "https://"))
    if not served:
        try:
            store.prepare_store(uri)
        except store.StoreError as err:
            return fail(f"ui: {err}")
    base = uri if served else f"http://{args.host}:{args.port}"
    try:
        url, charts, what = landing_urls(base, uri)
    except Exception as err:  # noqa: BLE001 - e.g. the server is down: one line
        return fail(f"ui: {mask(uri)}: {one_line(mask_text(err))}")
    print(url, flush=True)  # stdout: the link alone (for scripts); stderr: what it shows
    where = f"the server {mask(uri)}" if served else f"MLflow UI over {mask(uri)}"
    print(
        f"({what}, on {where}" + (f"; its charts: {charts}" if charts else "") + ")",
        file=sys.stderr,
    )
    if served:  # a server already: nothing to start
        if args.open:
            _open_browser(url)
        return 0
    cmd = ui_command(uri, args.host, args.port, args.workers)
    print("(Ctrl-C stops it)", file=sys.stderr, flush=True)
    # No GenAI job runners (7 huey processes): the runs UI does not need them. The store URI
    # goes by environment, not argv, where `ps` would show a password.
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_BACKEND_STORE_URI": uri,
    }
    # Its own process group, so that stopping the UI stops the server's workers too.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    if args.open and _wait_healthy(base, proc):
        _open_browser(url)

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        _stop_group(proc)


def _wait_healthy(base: str, proc, timeout: float = 60.0) -> bool:
    """Wait until the server at ``base`` answers ``/health`` (False if it exits first)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def _open_browser(url: str) -> None:
    import webbrowser

    if not webbrowser.open(url):
        print(f"sweeper: ui: no browser to open; open {url}", file=sys.stderr)


def _stop_group(proc) -> None:
    import os
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; make sure no worker outlives it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


# -- main ---------------------------------------------------------------------------------
def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweeper", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    h = sub.add_parser("hash", help="print the config hash for overrides (no training)")
    h.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. agent.lr=1e-3 seed=1")
    h.add_argument("--json", action="store_true", help="also print the canonical JSON hashed")
    h.set_defaults(fn=cmd_hash)

    r = sub.add_parser("reproduce", help="re-run a tracked run's config and compare metrics")
    r.add_argument("hash", help="config hash or a unique prefix of one")
    r.add_argument("--tracking-uri", default=None)
    r.add_argument(
        "--output-dir", default=None, help="parent of the new run dir (default outputs/reproduce)"
    )
    r.set_defaults(fn=cmd_reproduce)

    rep = sub.add_parser("report", help="a study's top trials, best config, importances, plots")
    rep.add_argument("--study", default=None, help="study name (default: the only one)")
    rep.add_argument(
        "--storage",
        default=None,
        help="Optuna storage (default journal:outputs/optuna/journal.log)",
    )
    rep.add_argument("--top", type=int, default=10)
    rep.add_argument("--out", default=None, help="plots dir (default outputs/reports/<study>)")
    rep.add_argument("--no-plots", action="store_true")
    rep.add_argument(
        "--html",
        action="store_true",
        help="also Optuna's interactive plotly pages (sharing one plotly.min.js); "
        "default: $SWEEPER_PLOTLY_HTML, off",
    )
    rep.add_argument(
        "--bootstrap",
        type=int,
        default=100,
        metavar="N",
        help="resamples (over trials and seeds) for the importance's uncertainty",
    )
    rep.set_defaults(fn=cmd_report)

    ev = sub.add_parser(
        "eval", help="play greedy episodes with a saved agent (RL Zoo's enjoy); GridWorld policy"
    )
    ev.add_argument("run", help="a run directory, an MLflow run id or a config hash prefix")
    ev.add_argument("--episodes", type=_positive, default=10, metavar="N", help="episodes (10)")
    ev.add_argument("--tracking-uri", default=None)
    ev.set_defaults(fn=cmd_eval)

    st = sub.add_parser("studies", help="list the studies in a storage, newest activity first")
    st.add_argument(
        "--storage",
        default=None,
        help="Optuna storage (default journal:outputs/optuna/journal.log)",
    )
    st.set_defaults(fn=cmd_studies)

    rt = sub.add_parser(
        "retest", help="re-train a study's best configs on unseen test seeds (phase=test runs)"
    )
    rt.add_argument("--study", default=None, help="study name (default: the only one)")
    rt.add_argument(
        "--storage",
        default=None,
        help="Optuna storage (default journal:outputs/optuna/journal.log)",
    )
    rt.add_argument("--top", type=_positive, default=3, metavar="K", help="best configs (3)")
    rt.add_argument("--seeds", type=_positive, default=10, metavar="M", help="test seeds (10)")
    rt.add_argument("--jobs", type=_positive, default=2, metavar="N", help="runs at a time (2)")
    rt.add_argument("--tracking-uri", default=None)
    rt.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="runs in DIR/test/trial-N/seed_S, figure in DIR/figures (default: the best "
        "trial's sweep dir if it is still there, else outputs/retest/<study>)",
    )
    rt.set_defaults(fn=cmd_retest)

    u = sub.add_parser(
        "ui",
        help="start the MLflow UI over the tracking store (a server: print where to look); "
        "prints the URL of the newest study's runs table",
    )
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--workers", type=int, default=1)
    u.add_argument("--tracking-uri", default=None)
    u.add_argument(
        "--open", action="store_true", help="open the newest study's runs table in a browser"
    )
    u.set_defaults(fn=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
