"""NN-Mass (Bhardwaj et al.) experiment configs: ``mlp.py`` (MLPs, LDI), ``cifar.py`` (dense
CNNs), ``imagenet.py`` (MobileNetV2 and torchvision ResNets)."""
