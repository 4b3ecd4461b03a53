"""NetAdapt: prunes a .keras model to a latency on a device, one channel group per iteration, chosen by holdout
accuracy per microsecond saved according to the device's latency table.

    python scripts/netadapt.py --model=models/resnet20_fashion_mnist.keras --table=tables/resnet20.npz \
        --latency_fraction=0.5 --short_term_steps=100 --finetune_epochs=10 --output=/tmp/resnet20_na.keras
    python scripts/netadapt.py ... --resume          # after a kill: continues from OUTPUT.state/

The table is built on ``--device`` when ``--table`` does not exist yet (``scripts/latency_table.py`` builds one
with more options, over SSH too). Every iteration is saved to OUTPUT.state/ (the current model and the history);
``--resume`` continues from there. Defaults are the thesis's (REFERENCE.md §1.2): 100 fine-tune batches per
candidate, holdout 10 %, first saving target (1 − fraction)·latency / 20, ×0.98 per iteration, l2 importance,
SGD lr 8e-4. The final model is measured on the device next to the table's prediction.

Writes OUTPUT (.keras) and OUTPUT.json: the plan (re-appliable with ``scripts/prune.py --plan``), the history
(group chosen per iteration, its candidates, predicted latency, holdout error), accuracies, predicted and
measured latency, the host and the flags.
"""

from __future__ import annotations

import shutil

from absl import flags

from tfcompress.cli import latency_aim
from tfcompress.cli.flags import define_dataset_flags

FLAGS = flags.FLAGS
latency_aim.define_flags(table_required=True)
flags.DEFINE_enum("importance", "l2", ["l2", "l1", "fisher"], "Which channels of a group stay: l2 filter norms, "
                  "l1, or Fisher saliencies accumulated during the last short-term fine-tune.")
flags.DEFINE_integer("short_term_steps", 100, "Fine-tune batches per candidate.", lower_bound=1)
flags.DEFINE_float("init_red_fact", 20.0, "The first saving target is (1 − fraction)·latency / this.",
                   lower_bound=1e-6)
flags.DEFINE_float("decay_rate", 0.98, "The saving target is multiplied by this after every iteration.",
                   lower_bound=1e-6, upper_bound=1.0)
flags.DEFINE_enum("selection", "ratio", ["ratio", "thesis"], "ratio: smallest Δerror/µs saved wins; thesis: "
                  "the thesis's rule (smallest Δerror once a candidate lowered the error).")
flags.DEFINE_integer("holdout_limit", None, "Compare candidates on the first N holdout examples only.",
                     lower_bound=1)
flags.DEFINE_integer("max_iterations", 1000, "Stop with an error after this many iterations.", lower_bound=1)
flags.DEFINE_bool("measure_iterations", False, "Also measure every iteration's model on the device (export + "
                  "benchmark each time: slow).")
flags.DEFINE_string("tensorboard_dir", None, "Write per-iteration scalars (predicted and measured latency, "
                    "holdout error) here for TensorBoard (viewing needs the tensorboard package).")
flags.DEFINE_bool("resume", False, "Continue from OUTPUT.state/ (written after every iteration).")
define_dataset_flags()
flags.register_multi_flags_validator(
    ["latency_fraction", "latency_ms"], lambda f: sum(v is not None for v in f.values()) == 1,
    message="give the target: --latency_fraction (of the model's predicted latency) or --latency_ms")

_OWN_FLAGS = (
    "model", "output", "device", "table", "precision", "latency_fraction", "latency_ms", "importance",
    "short_term_steps", "init_red_fact", "decay_rate", "selection", "holdout_fraction", "holdout_limit", "lr",
    "finetune_epochs", "finetune_lr", "distill", "from_scratch", "train_limit", "seed", "threads", "runs", "dataset",
    "batch_size", "tensorboard_dir",
)


def main(argv: list[str]) -> None:
    del argv
    import keras

    import tfcompress as tfc
    from tfcompress.cli.flags import load_model_for_dataset

    output = tfc.files.check_output(FLAGS.output, inputs=[FLAGS.model])
    tfc.files.check_output(tfc.files.sidecar_path(output), inputs=[FLAGS.model])
    state_dir = tfc.files.check_output_folder(output.with_name(output.name + ".state"))
    if FLAGS.tensorboard_dir:
        tfc.files.check_output_folder(FLAGS.tensorboard_dir)
    if (state_dir / "state.json").exists() and not FLAGS.resume:
        raise ValueError(f"{state_dir} holds an interrupted NetAdapt run: pass --resume to continue it, or remove "
                         "the folder to start again")
    if FLAGS.resume and not (state_dir / "state.json").exists():
        raise ValueError(f"--resume: no NetAdapt state in {state_dir} (it is written after every iteration)")
    keras.utils.set_random_seed(FLAGS.seed)
    model = load_model_for_dataset(FLAGS.model)
    device, table = latency_aim.device_and_table(model, needed=True)
    train, holdout, test = latency_aim.splits(model)
    if FLAGS.holdout_limit:
        holdout = holdout.unbatch().take(FLAGS.holdout_limit).batch(FLAGS.batch_size)
    accuracy_before = tfc.training.evaluate(model, test)["accuracy"]
    print(f"{FLAGS.model}: accuracy {accuracy_before:.4f}; predicted "
          f"{table.predict(model, FLAGS.precision).ms:.3f} ms ({FLAGS.precision}, {device.name})")

    def measure(pruned) -> float:
        result = tfc.latency.measure_model(pruned, device, FLAGS.precision, threads=FLAGS.threads, runs=FLAGS.runs)
        return 1000 * result.latency_ms

    result = tfc.pruning.netadapt.netadapt(
        model, train, holdout, table=table, target_latency=latency_aim.latency_target(), precision=FLAGS.precision,
        importance=FLAGS.importance, short_term_steps=FLAGS.short_term_steps, init_red_fact=FLAGS.init_red_fact,
        decay_rate=FLAGS.decay_rate, selection=FLAGS.selection, max_iterations=FLAGS.max_iterations,
        optimizer=lambda: tfc.training.finetune_sgd(FLAGS.lr), state_dir=state_dir,
        measure=measure if FLAGS.measure_iterations else None, log_dir=FLAGS.tensorboard_dir, progress=print)
    print(result.plan.table())
    final, report = latency_aim.finish(model, result.model, result.plan, train, test, device, table, holdout)
    latency_aim.write(output, final, {
        "source": FLAGS.model, "accuracy_before": accuracy_before, **report, **result.report()}, _OWN_FLAGS)
    shutil.rmtree(state_dir)  # the run is complete: its outputs hold everything the state did
    print(f"accuracy {accuracy_before:.4f} → {latency_aim.final_accuracy(report):.4f}; {len(result.history)} "
          f"iterations → {output}")


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
