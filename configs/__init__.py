"""Experiment configs: each file has get_config(arg) with variants chosen by the argument."""
