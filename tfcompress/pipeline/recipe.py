"""A recipe: the ordered stages of a compression run, as JSON or as the same list in Python.

    [{"stage": "prune", "method": "l1", "target_macs": 0.5},
     {"stage": "distill", "epochs": 2, "lr": 0.01},
     {"stage": "ternarize", "method": "ec2t", "epochs": 1},
     {"stage": "quantize", "precision": "int8"}]

Each entry names a stage of :data:`tfcompress.pipeline.stages.STAGES` and its keyword arguments. A recipe is
checked whole before anything runs: an unknown stage or argument, or a missing one, is a one-line error naming
the entry and what the stage takes.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a recipe: the stage's name and its keyword arguments (JSON values)."""

    stage: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        """``prune(method=l1, target_macs=0.5)``: how tables and logs name the step."""
        args = ", ".join(f"{key}={value}" for key, value in self.params.items())
        return f"{self.stage}({args})"

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, **self.params}


class RecipeError(ValueError):
    """A recipe that cannot run: the message names the entry and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The stages of a compression run, in order."""

    stages: tuple[Stage, ...]

    @classmethod
    def parse(cls, entries: Iterable[Mapping[str, Any]] | Recipe) -> Recipe:
        """A checked recipe from ``[{"stage": "prune", ...}, ...]`` (or a recipe, returned as it is).

        Raises:
            RecipeError: not a list of objects, an unknown stage, an argument the stage does not take, a
                required argument missing.
        """
        if isinstance(entries, Recipe):
            return entries
        from tfcompress.pipeline.stages import STAGES  # the stages use the whole library: import when needed

        if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Iterable):
            raise RecipeError(f"a recipe is a list of stages ({{\"stage\": \"prune\", ...}}), got "
                              f"{type(entries).__name__}")
        stages = []
        for number, entry in enumerate(entries, 1):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("stage"), str):
                raise RecipeError(f"recipe entry {number} must be an object with a \"stage\" name, got {entry!r}")
            params = {key: value for key, value in entry.items() if key != "stage"}
            name = entry["stage"]
            if name not in STAGES:
                raise RecipeError(f"recipe entry {number}: unknown stage {name!r}; stages: {', '.join(STAGES)}")
            _check_arguments(number, name, STAGES[name], params)
            stages.append(Stage(name, params))
        if not stages:
            raise RecipeError("the recipe has no stage")
        return cls(tuple(stages))

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """A recipe from a JSON file (a list of stages, or ``{"stages": [...]}``)."""
        try:
            value = json.loads(Path(path).read_text())
        except OSError as error:
            raise RecipeError(f"cannot read recipe {str(path)!r}: {error.strerror or error}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RecipeError(f"recipe {str(path)!r} is not JSON: {error}") from None
        return cls.parse(value["stages"] if isinstance(value, Mapping) and "stages" in value else value)

    def to_list(self) -> list[dict[str, Any]]:
        return [stage.to_dict() for stage in self.stages]

    def precision_after(self, index: int) -> str:
        """The export precision in force after stage ``index``: the last ``quantize`` stage's, else float32."""
        for stage in reversed(self.stages[: index + 1]):
            if stage.stage == "quantize":
                return stage.params.get("precision", "int8")
        return "float32"


def _check_arguments(number: int, name: str, function: Any, params: Mapping[str, Any]) -> None:
    signature = inspect.signature(function)
    accepted = [p for p in list(signature.parameters.values())[2:]]  # after (model, context)
    names = {p.name for p in accepted}
    unknown = sorted(set(params) - names)
    if unknown:
        raise RecipeError(f"recipe entry {number} ({name}): unknown argument(s) {', '.join(unknown)}; {name} takes "
                          f"{', '.join(sorted(names)) or 'no argument'}")
    missing = [p.name for p in accepted if p.default is inspect.Parameter.empty and p.name not in params]
    if missing:
        raise RecipeError(f"recipe entry {number} ({name}): missing argument(s) {', '.join(missing)}")
    check = getattr(function, "check", None)
    if check is not None:
        try:
            check(**params)
        except (TypeError, ValueError) as error:
            raise RecipeError(f"recipe entry {number} ({name}): {error}") from None
