"""Compression pipelines: recipes of stages run and measured one after the other (:mod:`.recipe`,
:mod:`.stages`, :mod:`.run`), and the latency budget in one call (:func:`compress`, :mod:`.budget`)."""

from tfcompress.pipeline.budget import BudgetResult, compress
from tfcompress.pipeline.recipe import Recipe, RecipeError, Stage
from tfcompress.pipeline.run import Measurement, PipelineResult, measure_row, run_recipe, write_summary
from tfcompress.pipeline.stages import STAGES, Context

__all__ = [
    "STAGES", "BudgetResult", "Context", "Measurement", "PipelineResult", "Recipe", "RecipeError", "Stage",
    "compress", "measure_row", "run_recipe", "write_summary",
]
