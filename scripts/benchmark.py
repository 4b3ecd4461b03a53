"""Measure the latency of a .tflite model; see tfcompress/cli/benchmark.py for the flags (--help)."""

from tfcompress.cli.benchmark import run

if __name__ == "__main__":
    run()
