"""PyTorch interop: state dicts into gnj variables.

- :mod:`gnj.interop.convert`: ``from_torch(model, variables, state_dict)`` for any model family
  with a registered name map (each paper registers the layouts of its reference code);
- :mod:`gnj.interop.torchvision`: torchvision ResNet / MobileNetV2 ``.pth`` files, and
  ``apply_to_state(state, config)``, which the train loop calls for ``config.pretrained``.
"""
