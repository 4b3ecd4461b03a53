"""`python scripts/distill.py --help`: the program is tfcompress/cli/distill.py (train.py with a teacher)."""

from absl import flags

from tfcompress.cli import distill as program
from tfcompress.cli import flags as shared_flags
from tfcompress.cli import train as trainer

# --help lists the key flags of __main__ only: adopt the training program's and the shared ones.
flags.adopt_module_key_flags(trainer)
flags.adopt_module_key_flags(shared_flags)

if __name__ == "__main__":
    program.run()
