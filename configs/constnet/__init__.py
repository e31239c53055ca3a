"""ConstNet / LeakyNet (Blumenfeld et al.) experiment configs."""
