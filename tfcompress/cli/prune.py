"""Prunes channels of a .keras model physically (dependency-aware), optionally fine-tunes, and saves it.

    python scripts/prune.py --model=models/resnet20_fashion_mnist.keras --importance=l1 --target_macs=0.5 \
        --finetune_epochs=2 --output=/tmp/resnet20_l1_50.keras
    python scripts/prune.py --model=/tmp/resnet20_fresh.keras --plan=/tmp/resnet20_l1_50.keras.json \
        --finetune_epochs=30 --output=/tmp/resnet20_l1_50_scratch.keras      # the same channels, from scratch

Every target is the fraction of the original KEPT (``--target_channels``, ``--target_macs`` or
``--target_params``), or a latency predicted by a table of the device (``--latency_table=T.npz
--target_latency=0.6`` or ``=1.5ms``, ``scripts/latency_table.py``; prune with ``--channel_multiple`` = the
table's step); ``--plan`` applies a saved plan instead (OUTPUT.json of an earlier run, or
``PruningPlan.save``) to a model of the same architecture, e.g. a freshly initialized zoo model, to retrain the
pruned architecture from scratch (as the NetAdapt work recommends).

Compression layers are kept: WeightMask layers (``scripts/snip.py``) keep their masks, sliced with their kernels,
and their zeros stay exactly zero through the fine-tune; ternary layers (``scripts/ternarize.py``) stay ternary
(a model with ternary layers is fine-tuned as EC2T's retrain phase: assignment frozen, Adam, centroids at a
tenth of ``--lr``). A plain sparse model would refill its zeros when fine-tuned: ``--keep_zeros`` (on by default
when the prunable kernels are at least half exact zeros) wraps its layers in WeightMask layers that keep them.

Prints every channel group's count before and after and the profile (params, MACs); writes OUTPUT (.keras,
compression layers kept; ``scripts/export.py`` strips them) and OUTPUT.json: the plan (re-appliable with
``--plan``), accuracy before / pruned / fine-tuned, what was kept, and the flags; with ``--plot``, OUTPUT.png:
every group's channels before and after (needs matplotlib). All atomically.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from tfcompress.cli.flags import define_dataset_flags

IMPORTANCES = ["l1", "l2", "bn", "random", "snip", "taylor", "fisher", "uniform"]
DATA_DRIVEN = ("snip", "taylor", "fisher")
TARGETS = ("target_channels", "target_macs", "target_params")
KEEP_ZEROS_THRESHOLD = 0.5  # --keep_zeros defaults to on from this fraction of exact zeros in prunable kernels

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Input .keras model (plain, or with WeightMask / ternary layers).")
flags.DEFINE_enum("importance", "l1", IMPORTANCES,
                  "Channel importance: l1, l2 (filter norms), bn (BatchNorm |γ|), random, snip, taylor, fisher "
                  "(data-driven: --prune_batches batches of the training split), uniform (l1, same fraction "
                  "removed from every group).")
flags.DEFINE_integer("prune_batches", 4, "Training batches (of --batch_size) a data-driven importance "
                     "(snip, taylor, fisher) is computed on.", lower_bound=1)
flags.DEFINE_float("target_channels", None, "Keep this fraction of the prunable channels, in (0, 1].")
flags.DEFINE_float("target_macs", None, "Keep at most this fraction of the original MACs, in (0, 1].")
flags.DEFINE_float("target_params", None, "Keep at most this fraction of the original parameters, in (0, 1].")
flags.DEFINE_string("target_latency", None, "Keep at most this predicted latency: a fraction of the unpruned "
                    "prediction (0.6) or milliseconds (1.5ms), predicted by --latency_table.")
flags.DEFINE_string("latency_table", None, "A latency table (T.npz, scripts/latency_table.py) of the model's "
                    "device, for --target_latency.")
flags.DEFINE_enum("latency_precision", "float32", ["float32", "int8"], "The precision --target_latency is for.")
flags.DEFINE_string("plan", None, "Apply this saved plan (OUTPUT.json of an earlier run, or PruningPlan.save) "
                    "instead of planning: same channels, e.g. on a freshly initialized model of the architecture.")
flags.DEFINE_enum("scope", None, ["global", "local"],
                  "Rank channels globally (default) or inside each group (uniform implies local).")
flags.DEFINE_integer("channel_multiple", 1, "Round every kept channel count up to a multiple of this (8 suits "
                     "SIMD kernels such as XNNPACK's).", lower_bound=1)
flags.DEFINE_bool("keep_zeros", None,
                  "Wrap plain layers holding exact zeros in WeightMask layers so that fine-tuning keeps them zero. "
                  f"Default: on when the plain prunable kernels are ≥ {KEEP_ZEROS_THRESHOLD:.0%} zeros (a stripped "
                  "sparse model). WeightMask layers of the input are always kept.")
flags.DEFINE_integer("finetune_epochs", 0, "Fine-tune epochs after pruning (SGD, cosine; EC2T retrain phase for "
                     "ternary models).", lower_bound=0)
flags.DEFINE_float("lr", None, "Fine-tuning learning rate (default 0.01 with SGD, lowered where the loss is too sharp "
                   "for it; 1e-4 with Adam for models with ternary layers, centroids at a tenth).", lower_bound=0.0)
flags.DEFINE_bool("distill", None, "Fine-tune by knowledge distillation from the model before pruning (α 0.1 on the "
                  "labels, T 5; a model with several outputs matches them all). Default: on, off with --plan (whose "
                  "input is usually a fresh model to retrain from scratch).")
flags.DEFINE_integer("train_limit", None, "Fine-tune on the first N training examples only.", lower_bound=1)
flags.DEFINE_float("holdout_fraction", 0.1, "Training images kept out of the fine-tune to choose its best epoch.")
flags.register_validator("holdout_fraction", lambda v: 0.0 < v < 1.0, message="--holdout_fraction must be in (0, 1)")
flags.DEFINE_integer("seed", 0, "Seed (random importance, pruning batches, shuffling).")
flags.DEFINE_string("output", None, "Output .keras path; OUTPUT.json beside it.")
flags.DEFINE_bool("plot", False, "Also write OUTPUT.png: every channel group's count before and after pruning "
                  "(needs matplotlib: pip install matplotlib).")
define_dataset_flags()
flags.mark_flags_as_required(["model", "output"])
flags.register_validator("output", lambda v: v is None or v.endswith(".keras"), message="--output must end in .keras")
for _target in TARGETS:
    flags.register_validator(_target, lambda v: v is None or 0.0 < v <= 1.0,
                             message=f"--{_target} is the fraction of the original kept: in (0, 1], e.g. 0.5")
flags.register_multi_flags_validator(
    [*TARGETS, "target_latency", "plan"], lambda f: sum(v is not None for v in f.values()) == 1,
    message="give exactly one of --target_channels, --target_macs, --target_params (fractions kept), "
            "--target_latency or --plan",
)
flags.register_multi_flags_validator(
    ["target_latency", "latency_table"], lambda f: (f["target_latency"] is None) == (f["latency_table"] is None),
    message="--target_latency and --latency_table go together: the table predicts the latency aimed at",
)

_OWN_FLAGS = (
    "model", "importance", "prune_batches", "target_channels", "target_macs", "target_params", "plan", "scope",
    "target_latency", "latency_table", "latency_precision", "channel_multiple", "keep_zeros", "finetune_epochs",
    "lr", "distill", "train_limit", "holdout_fraction", "seed", "dataset", "batch_size", "output", "plot",
)


def main(argv: list[str]) -> None:
    del argv
    import keras

    import tfcompress as tfc
    from tfcompress import plots
    from tfcompress.cli import compression
    from tfcompress.cli.flags import data_report, dataset_for_model, has_data, load_model_for_dataset, metric_name

    output = tfc.files.check_output(FLAGS.output, inputs=[FLAGS.model, FLAGS.plan])
    sidecar = tfc.files.check_output(tfc.files.sidecar_path(output), inputs=[FLAGS.model, FLAGS.plan])
    figure = None
    if FLAGS.plot:  # matplotlib and the path checked before any work, as the other outputs
        try:
            plots.require_matplotlib()
        except ImportError as error:
            raise ValueError(f"--plot: {error}") from None
        figure = tfc.files.check_output(output.with_name(output.name + ".png"), inputs=[FLAGS.model, FLAGS.plan],
                                        kind="binary")
    if FLAGS.plan is not None:
        ignored = [f"--{name}" for name in ("importance", "scope", "channel_multiple", "prune_batches")
                   if FLAGS[name].present]
        if ignored:
            raise ValueError(f"--plan applies a saved plan: {', '.join(ignored)} would be ignored; leave them out")
        saved_plan = _load_plan(FLAGS.plan)
    table = tfc.latency.Table.load(FLAGS.latency_table) if FLAGS.latency_table else None
    keras.utils.set_random_seed(FLAGS.seed)
    model = load_model_for_dataset(FLAGS.model)
    if FLAGS.plan is None and FLAGS.importance in DATA_DRIVEN:  # before evaluating: refused models cost nothing
        tfc.training.check_logits(model, f"the {FLAGS.importance!r} importance")
    cost_fn = table.cost_fn(model, FLAGS.latency_precision) if table is not None else None  # refuses unknown units
    if FLAGS.finetune_epochs or (FLAGS.plan is None and FLAGS.importance in DATA_DRIVEN):
        dataset_for_model(model.input_shape, "test")  # refuses, before any work, a model that has no data
    print(f"{FLAGS.model}: compression layers {compression.describe(model)}")

    def score(candidate) -> float | None:  # the model's metric on its test images, None without data
        if not has_data():
            return None
        return tfc.training.metric(tfc.training.evaluate(candidate, dataset_for_model(None, "test")))[1]

    accuracy_before = score(model)

    zero_fraction, holding_zeros = compression.plain_prunable_zeros(model)
    keep_zeros = FLAGS.keep_zeros if FLAGS.keep_zeros is not None else zero_fraction >= KEEP_ZEROS_THRESHOLD
    if zero_fraction or FLAGS.keep_zeros is not None:  # (a fresh model's zero biases go unmentioned)
        how = "--keep_zeros" if FLAGS.keep_zeros is not None else (
            f"default: ≥ {KEEP_ZEROS_THRESHOLD:.0%} zeros" if keep_zeros else f"default: < {KEEP_ZEROS_THRESHOLD:.0%}")
        if not holding_zeros:
            what = "no plain prunable layer holds zeros"
        elif keep_zeros:
            what = f"{', '.join(holding_zeros)} wrapped in WeightMask layers (their zeros stay zero in fine-tuning)"
        else:
            what = "fine-tuning may make their zeros non-zero"
        print(f"keep_zeros {'on' if keep_zeros else 'off'} ({how}; the plain prunable kernels are "
              f"{zero_fraction:.1%} zeros): {what}")
    if keep_zeros and holding_zeros:
        model = tfc.pruning.weight_masks.apply_masks(model, compression.zero_masks(model, holding_zeros))

    # Surgery slices weight masks and ternary assignments with their kernels: the compression layers stay.
    if FLAGS.plan is not None:
        small = tfc.pruning.apply_plan(model, saved_plan)
        plan = _plan_after(saved_plan, model, small)
    else:
        data = None
        if FLAGS.importance in DATA_DRIVEN:
            data = dataset_for_model(model.input_shape, "train", shuffle=True, seed=FLAGS.seed)
        result = tfc.pruning.prune_channels(
            model, FLAGS.importance, target_channels=FLAGS.target_channels, target_macs=FLAGS.target_macs,
            target_params=FLAGS.target_params, cost_fn=cost_fn, target_latency=FLAGS.target_latency,
            scope=FLAGS.scope, channel_multiple=FLAGS.channel_multiple,
            data=data, num_batches=FLAGS.prune_batches, seed=FLAGS.seed,
        )
        small, plan = result.model, result.plan.to_dict()
    print(_plan_table(plan))
    if table is not None:
        before, after = table.predict(model, FLAGS.latency_precision), table.predict(small, FLAGS.latency_precision)
        plan["predicted_latency_ms"] = {"before": before.ms, "after": after.ms, "precision": FLAGS.latency_precision,
                                        "device": table.meta.get("device")}
        print(f"predicted latency ({FLAGS.latency_precision}, {table.meta.get('device')}): {before.ms:.3f} ms → "
              f"{after.ms:.3f} ms ({after.ms / before.ms:.1%})")
    accuracy_pruned = score(small)

    accuracy_finetuned = None
    if FLAGS.finetune_epochs:
        train = dataset_for_model(small.input_shape, "train", augment=True, seed=FLAGS.seed, limit=FLAGS.train_limit,
                                  holdout_fraction=FLAGS.holdout_fraction)
        holdout = dataset_for_model(small.input_shape, "holdout", holdout_fraction=FLAGS.holdout_fraction)
        how = _finetune(small, model, train, holdout)
        accuracy_finetuned = score(small)
        print(f"fine-tuned {FLAGS.finetune_epochs} epochs ({how}): {metric_name()} {accuracy_finetuned:.4f}")
    print(tfc.profile.profile(small).table())
    kept = compression.compression_layers(small)
    sparsity = compression.masked_sparsity(small)
    tfc.files.save_model(small, output)
    tfc.files.write_json(sidecar, {
        "source": FLAGS.model,
        "accuracy_before": accuracy_before,
        "accuracy_pruned": accuracy_pruned,
        "accuracy_finetuned": accuracy_finetuned,
        **plan,
        "compression_layers": kept,
        "keep_zeros": {"enabled": bool(keep_zeros), "plain_prunable_zero_fraction": zero_fraction,
                       "wrapped": sorted(holding_zeros) if keep_zeros else []},
        "weight_mask_sparsity": sparsity,
        "metric": metric_name(),
        **data_report(),
        "flags": {name: FLAGS[name].value for name in _OWN_FLAGS},
    })
    if figure is not None:
        plots.channels_per_group(plan["groups"], figure, title=f"{Path(FLAGS.model).name} → {output.name}")
    finetuned = f", fine-tuned {FLAGS.finetune_epochs} epochs {accuracy_finetuned:.4f}" if FLAGS.finetune_epochs else ""
    masked = f"; weight masks {sparsity['sparsity']:.1%} zeros" if sparsity["params"] else ""
    scores = (f"{metric_name()} {accuracy_before:.4f} → pruned {accuracy_pruned:.4f}{finetuned}; " if has_data()
              else "no data (the model records none; --dataset gives it): not evaluated; ")
    print(f"{scores}"
          f"MACs ×{plan['macs_after'] / plan['macs_before']:.3f}, "
          f"params ×{plan['params_after'] / plan['params_before']:.3f}"
          f"{masked}; compression layers kept: {compression.describe(small)} → {output}"
          f"{f' (channels per group: {figure})' if figure is not None else ''}")


def _finetune(model, teacher, train, holdout) -> str:
    """Fine-tunes in place: EC2T's retrain phase for a model with ternary layers (they stay ternary); else SGD with
    a cosine schedule (weight masks keep their zeros under any optimizer) — by distillation from ``teacher`` (the
    model before pruning) unless ``--distill=false``, matching every output for a model with several — keeping the
    weights of the best holdout epoch (the starting ones included: a fine-tune never leaves the model worse).
    Returns how."""
    import tfcompress as tfc
    from tfcompress.quantization import ec2t, ternary

    if ternary.ternary_layers(model):
        lr = FLAGS.lr if FLAGS.lr is not None else 1e-4
        ternary.freeze_assignment(model)
        ternary.fit(model, train, FLAGS.finetune_epochs, ec2t.EC2T(phase="retrain"), learning_rate=lr,
                    centroid_learning_rate=lr / 10, verbose=2, callbacks=[tfc.training.StopOnNonFinite("fine-tuning")])
        return f"ternary layers: assignment frozen, Adam {lr:g}, centroids {lr / 10:g}"
    lr = FLAGS.lr if FLAGS.lr is not None else 0.01
    distill = FLAGS.distill if FLAGS.distill is not None else FLAGS.plan is None
    if not isinstance(train.element_spec[1], tuple):  # class labels: the recipes' fine-tune stage
        said = []
        context = tfc.pipeline.Context(original=teacher, train=train, test=holdout, holdout=holdout,
                                       progress=said.append)
        tfc.pipeline.stages.finetune(model, context, FLAGS.finetune_epochs, lr, "original" if distill else None)
        for line in said:
            print(line)
        how = "distillation from the model before pruning (α 0.1, T 5)" if distill else "cross-entropy"
        return f"{how}, SGD from ≤ {lr:g}, cosine, best holdout epoch kept"
    steps = FLAGS.finetune_epochs * int(train.cardinality())
    tfc.training.compile_for(model, train, tfc.training.sgd(lr, steps, "cosine"))
    best = tfc.training.KeepBestEpoch(holdout)
    model.fit(train, epochs=FLAGS.finetune_epochs, verbose=2, shuffle=False,  # shuffled by tf.data
              callbacks=[tfc.training.StopOnNonFinite("fine-tuning"), best])
    print(best.summary())
    return (f"matching the original's outputs (MSE, every head), SGD {lr:g}, cosine, best holdout epoch "
            f"{best.best_epoch}")


def _load_plan(path: str) -> dict:
    import tfcompress as tfc

    try:
        return tfc.pruning.PruningPlan.load(path)
    except UnicodeDecodeError:  # a .keras or other binary file
        raise ValueError(f"--plan {path} is not a JSON channel plan (OUTPUT.json of prune.py, or "
                         "PruningPlan.save)") from None


def _plan_after(saved: dict, model, small) -> dict:
    """A saved plan's groups (only: an OUTPUT.json holds more) with the costs measured on ``model`` and on the
    pruned ``small``."""
    from tfcompress.graph import ChannelGraph

    before, after = ChannelGraph(model), ChannelGraph(small)
    return {"format": saved["format"], "groups": saved["groups"],
            "macs_before": before.cost(metric="macs"), "macs_after": after.cost(metric="macs"),
            "params_before": before.cost(metric="params"), "params_after": after.cost(metric="params")}


def _plan_table(plan: dict) -> str:
    lines = [f"{'before':>6}  {'after':>6}  group"]
    for group in plan["groups"]:
        changed = group["channels_after"] != group["channels_before"]
        lines.append(f"{group['channels_before']:>6}  {group['channels_after']:>6}  {group['name']}"
                     f"{'  *' if changed else ''}")
    lines.append(f"MACs {plan['macs_before']:,} → {plan['macs_after']:,} "
                 f"({plan['macs_after'] / plan['macs_before']:.1%}); params {plan['params_before']:,} → "
                 f"{plan['params_after']:,} ({plan['params_after'] / plan['params_before']:.1%})")
    return "\n".join(lines)


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
