"""Launchers: ``launch.sweep`` (variants × repeats, locally) and ``launch/slurm.sh`` (one run
over many hosts through ``jax.distributed``)."""
