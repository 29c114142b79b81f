"""twinsearch encoder: preprocessing, backbones, losses, samplers, training, evaluation and calibration."""
