"""Knowledge distillation: ``scripts/train.py`` with ``--teacher`` required (see tfcompress/cli/train.py).

    python scripts/distill.py --init_model=/tmp/pruned.keras --teacher=models/resnet20_fashion_mnist.keras \
        --epochs=5 --lr=0.01 --output=/tmp/pruned_kd.keras
    python scripts/distill.py --model=resnet8 --teacher=models/resnet20_fashion_mnist.keras --alpha=0.2 \
        --temperature=2 --epochs=30 --output=/tmp/resnet8_kd.keras      # a fresh student, the thesis's best

Loss: alpha · CE(labels) + (1 − alpha) · T² · CE(softmax(teacher / T), softmax(student / T)); defaults are the
thesis code's (alpha 0.1, T 5). Writes the student alone (OUTPUT, OUTPUT.json); checkpoints and ``--resume`` as
train.py.
"""

from __future__ import annotations

from absl import flags

from tfcompress.cli import train as program

flags.mark_flag_as_required("teacher")
FLAGS = flags.FLAGS
main = program.main


def run() -> None:
    program.run()
