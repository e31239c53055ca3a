"""Gradient Norm Equality (Chen et al.) experiment configs: ``cifar.py`` (the CIFAR-10
catalogue), ``imagenet.py`` (the README's MobileNet and ResNet-50 runs); ``common.py`` holds the
helpers every family shares."""
