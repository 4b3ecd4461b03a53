"""`python scripts/compress.py --help`: the program is tfcompress/cli/compress.py."""

from absl import flags

from tfcompress.cli import compress as program
from tfcompress.cli import flags as shared_flags

# --help lists the key flags of __main__ only: adopt the program's own and the shared ones.
flags.adopt_module_key_flags(program)
flags.adopt_module_key_flags(shared_flags)

if __name__ == "__main__":
    program.run()
