import sys

from tfcompress.data.builtin import _main

sys.exit(_main(sys.argv))
