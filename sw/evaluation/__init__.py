"""Metrics (a registry) and the evaluation loop over batches."""
