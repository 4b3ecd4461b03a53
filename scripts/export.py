"""export: see tfcompress/cli/export.py for the flags (--help)."""

from tfcompress.cli.export import run

if __name__ == "__main__":
    run()
