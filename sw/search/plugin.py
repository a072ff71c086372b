"""The problem-plugin protocol and its registry: what the search optimises.

A problem is a module (or any object) registered in `PROBLEMS` that defines five functions:

- `init_function(model, study) -> QuantizedModel`: wrap and calibrate the fp32 model;
- `update_params_function(qmodel, x, study)`: apply one candidate (an integer vector);
- `prepare_exploration_function(qmodel, study, thresholds) -> pymoo Problem`;
- `sampling_method(study)`: a pymoo Sampling for the initial population;
- `repair_method(study)`: a pymoo Repair applied to offspring;

and, optionally (a plugin with its own decision vector defines it),

- `variable_names_function(study) -> list[str]`: the names of the decision vector's entries
  (default: one bit width per layer, or weight and input bits per layer; see
  `sw.search.vector.default_variable_names`). The pymoo Problem's `var_names` must equal them.

The plugin alone gives a decision vector its meaning: every command applies a vector with
`update_params_function` and reads the bits per layer back from the model (`Study.apply`,
`Study.decode`), so a custom vector works in explore, evaluate, retrain, weather-sweep and cosim.

`study` is the `sw.study.study.Study` of the workload (data, models, results). A problem is
registered as a package entry point in the group `mpq_codesign.problems` (this project's
`pyproject.toml` registers `quantization_problem` here and `energy_aware_quant_problem` from the
`energy` package, which sits above `sw`), so a user's installed package can add its own; or,
with `trust_custom_code: true`, a workload names it as `package.module:object`.
"""

from __future__ import annotations

from typing import Any

from sw.core.registry import Registry
from sw.search.vector import default_variable_names

PLUGIN_FUNCTIONS = ("prepare_exploration_function", "repair_method", "sampling_method", "init_function",
                    "update_params_function")

OPTIONAL_FUNCTIONS = ("variable_names_function",)

PROBLEMS: Registry[Any] = Registry("problem", entry_point_group="mpq_codesign.problems")


def check_plugin(plugin: Any, name: str = "") -> Any:
    """Raise TypeError unless `plugin` defines all five plugin functions."""
    missing = [f for f in PLUGIN_FUNCTIONS if not callable(getattr(plugin, f, None))]
    if missing:
        raise TypeError(f"problem plugin {name or plugin!r} lacks {', '.join(missing)}")
    return plugin


def variable_names_of(plugin: Any, study: Any) -> list[str]:
    """The plugin's decision variable names (its `variable_names_function`, or the default one)."""
    function = getattr(plugin, "variable_names_function", None) or default_variable_names
    return [str(name) for name in function(study)]
