"""One subpackage per reference paper: everything that exists only to reproduce that paper.

The core of gnj (``gnj.nn``, ``gnj.models``, ``gnj.data``, ``gnj.analysis``, ``gnj.train``, the
registries) names no paper. A paper's place is four paths with the same name:

- ``gnj/proj/<paper>/``: its model presets and variants, reproduction quirk flags, schedules,
  datasets, converters and analyses, each registered in a core registry
  (``gnj.registry``) when the subpackage is imported;
- ``configs/<paper>/``: its experiment configs
  (``python -m gnj.main --config=configs/<paper>/x.py``);
- ``docs/proj/<paper>.md``: what the reference code does and which of its quirks gnj keeps;
- ``tests/proj/<paper>/``: its tests.

The core depends on no paper; a paper depends on the core only. Importing ``gnj.proj`` (the
registries do it the first time a name is looked up) imports every paper, so every entry is
available by name from any config.
"""

from gnj.proj import beyond_bn, constnet, gne, nn_mass, online_norm  # noqa: F401
