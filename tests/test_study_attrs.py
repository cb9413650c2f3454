"""The user-attribute names on trials and studies are stated once (``sweeper.study_attrs``)
and never change: studies written by older versions must read back."""

from __future__ import annotations

import re
from pathlib import Path

from sweeper import study_attrs

ROOT = Path(__file__).resolve().parents[1]


def test_the_names_are_the_stored_ones():
    # as written by every earlier version: renaming one would orphan existing studies
    assert {name: value for name, value in vars(study_attrs).items() if name.isupper()} == {
        "PREFIX": "sweeper:",
        "UNCOUNTED": "sweeper:uncounted",
        "SEEDS": "sweeper:seeds",
        "AGGREGATE": "sweeper:aggregate",
        "OVERRIDES": "sweeper:overrides",
        "ERROR": "sweeper:error",
        "OUTPUT_DIR": "sweeper:output_dir",
        "OWNER": "sweeper:owner",
        "HEARTBEAT": "sweeper:heartbeat",
        "REQUEUED": "sweeper:requeued_from",
        "RETRIES": "sweeper:retries",
        "WORKER_PID": "sweeper:worker_pid",
        "FIXED_OVERRIDES": "sweeper:fixed_overrides",
        "SEARCH_SPACE": "sweeper:search_space",
        "REPLICATE_SEEDS": "sweeper:replicate_seeds",
        "PRUNER": "sweeper:pruner",
        "RETEST": "sweeper:retest",
        "SWEEP": "sweeper:sweep",
        "SAMPLER": "sweeper:sampler",
        "WORKER": "sweeper:worker:",
        "RETEST_CLAIM": "sweeper:retest_claim:",
        "SWEEP_DIR": "sweeper:sweep_dir",
    }


def test_no_other_module_spells_an_attribute_name():
    literal = re.compile(r"""["']sweeper:[a-z_]+:?["']""")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "sweeper").rglob("*.py"))
        if path.name != "study_attrs.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert not found, found
