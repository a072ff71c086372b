"""A Study: one workload's data, models, baselines and results, plus point configurations and the calibration ablation."""
