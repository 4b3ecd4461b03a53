"""Train a zoo model on an image dataset; see tfcompress/cli/train.py for the flags (--help)."""

from tfcompress.cli.train import run

if __name__ == "__main__":
    run()
