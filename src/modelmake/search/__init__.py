"""Search over configurations: the space a recipe's [search] names (space.py), its trials as
ordinary chains (trials.py), Optuna's samplers (sampler.py) and the selection (select.py).
build/trial_steps.py compiles a searching recipe; build/search_run.py runs its search step."""
