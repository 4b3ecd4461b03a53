"""`python scripts/morphnet.py --help`: the program is tfcompress/cli/morphnet.py."""

from absl import flags

from tfcompress.cli import flags as shared_flags
from tfcompress.cli import latency_aim
from tfcompress.cli import morphnet as program

# --help lists the key flags of __main__ only: adopt the program's own and the shared ones.
flags.adopt_module_key_flags(program)
flags.adopt_module_key_flags(shared_flags)
flags.adopt_module_key_flags(latency_aim)

if __name__ == "__main__":
    program.run()
