"""evaluate: see tfcompress/cli/evaluate.py for the flags (--help)."""

from tfcompress.cli.evaluate import run

if __name__ == "__main__":
    run()
