"""Recipes: how each shipped model is made, one JSON file per maze in dfplan/recipes/.

A recipe holds the data settings (`dfplan data`), and per model kind ("df", "diffuser") the model
settings, the training stages (`dfplan train`: stage 1 from scratch, each later stage resumes the
run with its changes, e.g. a lower rate with EMA) and the planner settings written into the
checkpoint. Per-maze values live only here; what each field means is documented where its
dataclass is defined (DataConfig, ModelConfig / UNetConfig, TrainConfig, PlannerConfig /
DiffuserConfig).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from dfplan.errors import UserError

RECIPES_DIR = Path(__file__).with_name("recipes")
# The models a recipe can hold: name -> (model kind, suffix of its shipped checkpoint's stem).
# "df-paper" is the unconditional DF model of the paper's setting (`dfplan bench --method
# df-paper`), shipped where it scores higher than the goal-conditioned model without its goal.
MODELS = {
    "df": ("df", ""),
    "df-paper": ("df", "-paper"),
    "diffuser": ("diffuser", "-diffuser"),
    "gcbc": ("gcbc", "-gcbc"),
}


def recipe_path(maze: str) -> Path:
    return RECIPES_DIR / f"{maze}.json"


@cache
def _load(maze: str) -> dict:
    path = recipe_path(maze)
    if not path.exists():
        raise UserError(f"no recipe for the '{maze}' maze ({path} is missing)")
    return json.loads(path.read_text())


def data_settings(maze: str) -> dict:
    """DataConfig fields (steps, noise, seed, dwell_prob, dwell_min, dwell_max) of a maze."""
    return dict(_load(maze)["data"])


def model_recipe(maze: str, name: str = "df") -> dict:
    """The recipe of one of a maze's models (a MODELS name): {"model": {...}, "stages": [{...},
    ...], "planner": {...}, "planner_paper": {...}, "planner_tuning": "..."}."""
    recipe = _load(maze)
    if name not in recipe:
        present = ", ".join(k for k in MODELS if k in recipe)
        raise UserError(f"the {maze} recipe has no '{name}' model; it has {present}")
    entry = recipe[name]
    return {
        "model": dict(entry["model"]),
        "stages": [dict(stage) for stage in entry["stages"]],
        "planner": dict(entry.get("planner", {})),
        "planner_paper": dict(entry.get("planner_paper", {})),
        "planner_tuning": entry.get("planner_tuning", ""),
    }


def planner_meta(maze: str, name: str = "df") -> dict:
    """What a checkpoint of the recipe's model states about planning: "planner" (every setting,
    defaults filled in by the planner's config dataclass), "planner_paper" for a DF model whose
    recipe has the paper's setting (the `df-paper` method), and "planner_tuning" (how the
    settings were chosen)."""
    from dataclasses import asdict

    if MODELS[name][0] == "gcbc":  # a policy: nothing to plan with
        return {}
    if MODELS[name][0] == "df":
        from dfplan.planner_config import PlannerConfig as config_cls
    else:
        from dfplan.policies.diffuser import DiffuserConfig as config_cls

    entry = _load(maze).get(name, {})
    meta = {}
    for key in ("planner", "planner_paper"):
        if key in entry or key == "planner":
            config = config_cls.from_dict(entry.get(key, {}))
            config.validate()
            meta[key] = asdict(config)
    if entry.get("planner_tuning"):
        meta["planner_tuning"] = entry["planner_tuning"]
    return meta
