"""Beyond BatchNorm (Lubana et al.) experiment configs."""
