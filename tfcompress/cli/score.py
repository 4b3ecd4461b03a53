"""Counts a saved model the MicroNet-challenge way and prints the per-layer table and the score.

    python scripts/score.py --model=models/resnet20_fashion_mnist.keras --task=cifar100 \
        --json=models/resnet20_fashion_mnist.micronet.json

``--param_bits=16`` (the challenge's free half precision) counts each parameter ½; ``--param_bits=32
--mul_bits=32`` counts everything in full precision, as the references (WRN-28-10: 36.5 M params, 10.49 B
ops) were counted. See tfcompress/micronet.py for the rules. ``--json`` writes the counts (totals, score and
every layer) atomically.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Path of the .keras model to score.")
flags.DEFINE_enum("task", "cifar100", ["cifar100", "imagenet"],
                  "Reference to score against: cifar100 (WRN-28-10) or imagenet (MobileNetV2-1.4).")
flags.DEFINE_integer(
    "param_bits", 16, "Bits of a stored parameter (16 counts each as ½).", lower_bound=1, upper_bound=32
)
flags.DEFINE_integer("mul_bits", 16, "Bits of a multiplication's inputs.", lower_bound=1, upper_bound=32)
flags.DEFINE_integer("add_bits", 32, "Bits of an accumulator.", lower_bound=1, upper_bound=32)
flags.DEFINE_string("json", None, "Optional output path for the counts as JSON.")
flags.mark_flag_as_required("model")
flags.register_validator("json", lambda v: v is None or v.endswith(".json"), message="--json must end in .json")


def main(argv: list[str]) -> None:
    del argv
    from tfcompress import export, files
    from tfcompress.quantization.scoring import micronet_score

    model_path = Path(FLAGS.model).expanduser()
    if not model_path.exists():
        raise app.UsageError(f"--model {FLAGS.model!r}: no such file")
    output = files.check_output(FLAGS.json, inputs=[model_path], kind="json") if FLAGS.json else None
    model = export.load_keras_model(model_path)  # says what a file that is not a model is

    try:
        result = micronet_score(  # ternary kernels (stripped or not) are counted the EC2T way
            model, task=FLAGS.task, param_bits=FLAGS.param_bits, mul_bits=FLAGS.mul_bits, add_bits=FLAGS.add_bits
        )
    except ValueError as error:  # a layer without a counting rule, or shapes that are not fixed
        raise app.UsageError(f"cannot score {model_path}: {error}") from None
    print(result.table())
    if output is not None:
        files.write_json(output, {"model_path": str(model_path), **result.to_dict()})
        print(f"→ {output}")


def run() -> None:
    from tfcompress.cli import app as cli_app

    cli_app.run(main)


if __name__ == "__main__":
    run()
