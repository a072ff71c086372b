"""The search machinery: problem-plugin protocol and registry, NSGA-II runners, results DB, Pareto fronts, held-out re-evaluation, hypervolume."""
