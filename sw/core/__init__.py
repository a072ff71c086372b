"""Shared basics at the bottom of sw: errors, durable writes, registries, the schema, CSV tables, limits."""
