"""absl-flag command-line programs. ``scripts/*.py`` and the ``tfc-*`` console commands run these."""
