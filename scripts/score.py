"""Print the MicroNet-challenge counts and score of a .keras model; see tfcompress/cli/score.py (--help)."""

from tfcompress.cli.score import run

if __name__ == "__main__":
    run()
