"""demo: see tfcompress/cli/demo.py for the flags (--help)."""

from tfcompress.cli.demo import run

if __name__ == "__main__":
    run()
