"""Imported by the sweeps' fork server (``sweeper.sweeps.workers.PRELOAD``): loads the compiled
DQN update into the server, so every trial process forked from it starts with the update in
memory instead of loading it from numba's disk cache (~0.25 s each) or, on a machine that
has never compiled it, compiling it (~5 s) once per worker."""

from sweeper.agents.dqn import load_compiled_update

load_compiled_update()
