"""Ray Tune / Optuna sweeps over the cifar_core trial; the only package that imports them."""
