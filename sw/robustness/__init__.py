"""Weather-corruption sweeps over a study's Pareto front."""
