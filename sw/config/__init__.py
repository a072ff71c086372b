"""Workloads: the validated YAML schema of a study and its loader."""
