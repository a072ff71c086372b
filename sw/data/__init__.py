"""Datasets (registry, loaders, the CIFAR reader) and weather corruptions."""
