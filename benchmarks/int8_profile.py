"""Where int8 time goes in LiteRT: the reference models and each layer of LeNet-5, float32 / dynamic / int8.

    python benchmarks/int8_profile.py     # writes benchmarks/results/int8_profile.{md,json}; ~10 min on 2 cores

LiteRT's Python interpreter has no per-op profiler, so the pieces are timed instead:

1. each model is exported as tfcompress exports it (``export.to_tflite``): float32, dynamic-range, int8 with
   float input/output (QUANTIZE/DEQUANTIZE at the ends) and int8 with int8 input/output (``int8_io``); their op
   lists are recorded with the weights' quantization (per-channel or per-tensor) and the nodes XNNPACK takes;
2. every Conv2D, pooling and Dense layer of ``--profile_model`` becomes a one-layer model with its real weights,
   exported in float32, dynamic and int8 (int8 I/O: the op alone), calibrated on the real activations it sees;
3. export choices that are tfcompress's own are timed next to the default (``CANDIDATES``): per-tensor
   instead of per-channel weight scales, and a static batch of 1 (the dynamic batch turns Flatten into
   SHAPE/STRIDED_SLICE/PACK/RESHAPE, which XNNPACK leaves out, splitting the graph into two partitions);
4. everything is timed in one interleaved session per thread count (``Device.side_by_side``), once on XNNPACK
   (LiteRT's default delegate, as every tfcompress latency) and once on LiteRT's built-in kernels
   (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``), and the session is repeated (``--sessions``) to show
   whether the ratios are stable. A one-weight Dense model gives the cost of one ``invoke()`` from Python, which
   is subtracted from the per-layer times ("net").

Ratios are int8 (or dynamic) time / float32 time of the same thing in the same session: below 1 is faster.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["models/lenet5_fashion_mnist.keras", "models/resnet20_fashion_mnist.keras"],
                  "Reference .keras models timed whole (relative to the repository).")
flags.DEFINE_string("profile_model", "models/lenet5_fashion_mnist.keras",
                    "The model whose layers are timed one by one.")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset of the models (calibration images).")
flags.DEFINE_list("threads", ["1", "2"], "Thread counts, one interleaved session each.")
flags.DEFINE_integer("runs", 200, "Timed invocations per model per pass.", lower_bound=5)
flags.DEFINE_integer("warmup", 20, "Untimed invocations before them.", lower_bound=1)
flags.DEFINE_integer("passes", 5, "Interleaved passes per session (the median is kept).", lower_bound=1)
flags.DEFINE_integer("sessions", 2, "Sessions per thread count, to check that the ratios repeat.", lower_bound=1)
flags.DEFINE_integer("num_calibration", 200, "Calibration samples for int8.", lower_bound=1)
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where int8_profile.md/.json go.")
flags.register_validator("threads", lambda values: all(v.isdigit() and int(v) >= 1 for v in values),
                         "--threads takes positive integers, e.g. 1,2")

PRECISIONS = ("float32", "dynamic", "int8", "int8_io")  # int8: float I/O as tfcompress exports; int8_io: int8 I/O
LAYER_PRECISIONS = ("float32", "dynamic", "int8_io")
KERNELS = ("xnnpack", "builtin")
BUILTIN_SUFFIX = ".builtin.tflite"  # a model file named so is timed on LiteRT's built-in kernels


# ------------------------------------------------------------------------------------------------- timing


def _device(builtin_runner: Any) -> Any:
    """A :class:`tfcompress.latency.Device` timing ``*.builtin.tflite`` files on the built-in kernels and every
    other file with the ``litert`` device (XNNPACK), so that both kinds interleave in one ``side_by_side``."""
    from tfcompress import latency

    xnnpack = latency.open_device("litert")

    class XnnpackAndBuiltin(latency.Device):
        name = "litert (XNNPACK and built-in kernels)"

        def measure(self, models: Sequence[Path], *, threads: int, runs: int, warmup: int) -> list[Any]:
            return [builtin_runner(Path(m), threads=threads, runs=runs, warmup=warmup) if str(m).endswith(
                BUILTIN_SUFFIX) else xnnpack.measure([Path(m)], threads=threads, runs=runs, warmup=warmup)[0]
                for m in models]

        def fingerprint(self, threads: int) -> dict[str, Any]:
            return xnnpack.fingerprint(threads)

    return XnnpackAndBuiltin()


def time_builtin(model_path: Path, *, threads: int, runs: int, warmup: int) -> Any:
    """``latency.run_interpreter`` with XNNPACK switched off: LiteRT's built-in (ruy / optimized) kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tfcompress.latency import LatencyResult, remote_runner
    from tfcompress.latency.interpreter import litert_version

    interpreter = Interpreter(model_path=str(model_path), num_threads=threads,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    times_ms = remote_runner.time_invocations(interpreter, runs, warmup, seed=0)
    return LatencyResult.from_times(times_ms, runtime="litert-interpreter-builtin", model_path=model_path,
                                    threads=threads, warmup=warmup, runtime_version=litert_version())


# ------------------------------------------------------------------------------------------------ op lists


def describe_ops(path: Path) -> dict[str, Any]:
    """The op sequence of a ``.tflite``: per op its name, input/output dtypes, the weights' quantization
    ("per-channel (N scales)" / "per-tensor"), and whether the XNNPACK delegate took it."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path), num_threads=1)  # default resolver: XNNPACK applied
    interpreter.allocate_tensors()
    nodes = interpreter._get_ops_details()  # the only op listing LiteRT's Python API has
    # Tensors as the file stores them: once XNNPACK has taken a per-tensor FULLY_CONNECTED, LiteRT reports its
    # weights with one scale per output channel.
    plain = Interpreter(model_path=str(path), num_threads=1,
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in plain.get_tensor_details()}
    model_ops = [node for node in nodes if node["op_name"] != "DELEGATE"]
    builtin = _builtin_nodes(nodes)
    ops = []
    for node in model_ops:
        weights = [tensors[i] for i in node["inputs"][1:2] if i >= 0 and i in tensors]
        scales = len(weights[0]["quantization_parameters"]["scales"]) if weights else 0
        ops.append({
            "op": node["op_name"],
            "inputs": [np.dtype(tensors[i]["dtype"]).name for i in node["inputs"] if i >= 0][:1],
            "output": np.dtype(tensors[node["outputs"][0]]["dtype"]).name,
            "weights": (None if not weights or node["op_name"] not in ("CONV_2D", "FULLY_CONNECTED",
                                                                       "DEPTHWISE_CONV_2D")
                        else f"{np.dtype(weights[0]['dtype']).name}, "
                        + ("float" if scales == 0 else "per-tensor" if scales == 1 else f"per-channel ({scales})")),
            "xnnpack": node["index"] not in builtin,
        })
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    return {"ops": ops, "xnnpack_partitions": sum(node["op_name"] == "DELEGATE" for node in nodes),
            "input": np.dtype(inputs[0]["dtype"]).name, "output": np.dtype(outputs[0]["dtype"]).name}


def _builtin_nodes(nodes: list[dict[str, Any]]) -> set[int]:
    """Indices of the nodes left to the built-in kernels. LiteRT lists the replaced nodes next to the DELEGATE
    nodes that replaced them and does not expose its execution plan, so a node counts as delegated when it lies
    between a DELEGATE node's inputs and its outputs (walking back from the outputs)."""
    delegates = [node for node in nodes if node["op_name"] == "DELEGATE"]
    producers = {o: node["index"] for node in nodes if node["op_name"] != "DELEGATE" for o in node["outputs"]}
    inside: set[int] = set()
    for delegate in delegates:
        boundary = {i for i in delegate["inputs"] if i >= 0}
        stack = [producers[o] for o in delegate["outputs"] if o in producers]
        while stack:  # walk back from the partition's outputs to its inputs
            index = stack.pop()
            if index in inside:
                continue
            inside.add(index)
            stack += [producers[i] for i in nodes[index]["inputs"] if i >= 0 and i not in boundary and i in producers]
    return {node["index"] for node in nodes if node["op_name"] != "DELEGATE" and node["index"] not in inside}


def op_line(description: dict[str, Any]) -> str:
    """``QUANTIZE → CONV_2D[int8, per-channel (20)] → …``; ops XNNPACK does not take are in *italics*."""
    parts = []
    for op in description["ops"]:
        text = op["op"] + (f"[{op['weights']}]" if op["weights"] else "")
        parts.append(text if op["xnnpack"] else f"*{text}*")
    return " → ".join(parts)


# ------------------------------------------------------------------------------------------------- models


def export_variants(model: Any, calibration: Any, folder: Path, stem: str) -> dict[str, Path]:
    """The model in every precision of :data:`PRECISIONS` (as ``export.to_tflite`` makes them)."""
    from tfcompress import export

    paths = {}
    for precision in PRECISIONS:
        quantization = "int8" if precision.startswith("int8") else precision
        paths[precision] = folder / f"{stem}_{precision}.tflite"
        export.to_tflite(model, quantization, representative_data=calibration if quantization == "int8" else None,
                         num_calibration_samples=FLAGS.num_calibration, int8_io=precision == "int8_io",
                         output=paths[precision])
    return paths


# Export choices that are tfcompress's own and could matter for int8 speed; each is timed next to the default.
CANDIDATES = {
    "int8 per-tensor": ("int8", {"per_tensor": True}),  # one weight scale per tensor instead of per channel
    "float32 batch-1": ("float32", {"batch_1": True}),  # static batch: Flatten is one RESHAPE, one partition
    "int8 batch-1": ("int8", {"batch_1": True}),
}


@contextlib.contextmanager
def export_choices(per_tensor: bool = False, batch_1: bool = False) -> Iterator[None]:
    """``export.to_tflite`` with per-tensor weight scales and/or a static batch of 1 (it has no flags for these:
    they are experiments, patched in for the duration)."""
    import tensorflow as tf

    from tfcompress import export

    with contextlib.ExitStack() as stack:
        if per_tensor:
            make = tf.lite.TFLiteConverter.from_concrete_functions

            def per_tensor_converter(*args: Any, **kwargs: Any) -> Any:
                converter = make(*args, **kwargs)
                converter._experimental_disable_per_channel = True  # the converter's own (private) switches
                converter._experimental_disable_per_channel_quantization_for_dense_layers = True
                return converter

            stack.enter_context(mock.patch.object(tf.lite.TFLiteConverter, "from_concrete_functions",
                                                  per_tensor_converter))
        if batch_1:
            from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

            def frozen_batch_1(model: Any) -> Any:
                specs = [tf.TensorSpec((1, *t.shape[1:]), t.dtype) for t in model.inputs]
                call = tf.function(lambda *inputs: model(inputs[0] if len(inputs) == 1 else list(inputs),
                                                         training=False))
                return convert_variables_to_constants_v2(call.get_concrete_function(*specs))

            stack.enter_context(mock.patch.object(export, "_frozen_inference_function", frozen_batch_1))
        yield


def layer_models(model: Any, images: np.ndarray) -> list[tuple[str, Any, np.ndarray, int]]:
    """(name, one-layer model sharing the layer's weights, its real input activations, MACs) for every Conv2D,
    pooling and Dense layer of a functional ``model``."""
    import keras

    pieces = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.Dense | keras.layers.MaxPooling2D
                          | keras.layers.AveragePooling2D):
            continue
        activations = keras.Model(model.inputs, layer.input).predict(images, verbose=0, batch_size=256)
        inputs = keras.Input(layer.input.shape[1:], name=f"{layer.name}_input")
        single = keras.Model(inputs, layer(inputs), name=f"only_{layer.name}")
        pieces.append((layer.name, single, activations, _macs(layer)))
    return pieces


def _macs(layer: Any) -> int:
    """Multiply-accumulates of one Conv2D / Dense call at batch 1 (0 for pooling)."""
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0
    outputs = int(np.prod(layer.output.shape[1:-1])) if len(layer.output.shape) > 2 else 1
    return outputs * int(np.prod(kernel.shape))


def floor_model() -> Any:
    """One weight, one output: its time is the cost of ``invoke()`` itself."""
    import keras

    inputs = keras.Input((1,), name="x")
    return keras.Model(inputs, keras.layers.Dense(1, name="one")(inputs), name="floor")


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    import tfcompress as tfc
    from tfcompress import export, files, latency

    threads_list = [int(t) for t in FLAGS.threads]
    device = _device(time_builtin)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="int8-profile-") as workdir:
        folder = Path(workdir)
        whole: dict[tuple[str, str], Path] = {}
        op_lists: dict[str, dict[str, Any]] = {}
        for model_path in FLAGS.models:
            model = export.load_keras_model(REPO / model_path)
            options = tfc.data.pipeline_options_for(model.input_shape, FLAGS.dataset)
            calibration = tfc.data.load(FLAGS.dataset, "train", batch_size=100, seed=0, **options)
            print(f"exporting {model.name}", flush=True)
            for precision, path in export_variants(model, calibration, folder, model.name).items():
                whole[(model.name, precision)] = path
                op_lists[f"{model.name} {precision}"] = describe_ops(path)

        profiled = export.load_keras_model(REPO / FLAGS.profile_model)
        options = tfc.data.pipeline_options_for(profiled.input_shape, FLAGS.dataset)
        calibration = tfc.data.load(FLAGS.dataset, "train", batch_size=100, seed=0, **options)
        images = np.concatenate([np.asarray(x) for x, _ in calibration.take(
            max(1, -(-FLAGS.num_calibration // 100)))])[:FLAGS.num_calibration]
        for candidate, (quantization, choices) in CANDIDATES.items():
            path = folder / f"{profiled.name}_{candidate.replace(' ', '_')}.tflite"
            with export_choices(**choices):
                export.to_tflite(profiled, quantization, representative_data=calibration if quantization == "int8"
                                 else None, num_calibration_samples=FLAGS.num_calibration, output=path)
            whole[(profiled.name, candidate)] = path
            op_lists[f"{profiled.name} {candidate}"] = describe_ops(path)
        layers: dict[tuple[str, str], Path] = {}
        layer_macs: dict[str, int] = {}
        for name, single, activations, macs in layer_models(profiled, images):
            print(f"exporting layer {name}", flush=True)
            layer_macs[name] = macs
            for precision, path in export_variants(single, activations, folder, f"layer_{name}").items():
                if precision in LAYER_PRECISIONS:
                    layers[(name, precision)] = path
                    op_lists[f"{profiled.name} layer {name} {precision}"] = describe_ops(path)
        rng = np.random.default_rng(0)
        for precision, path in export_variants(floor_model(), rng.random((64, 1), np.float32), folder,
                                               "floor").items():
            if precision in LAYER_PRECISIONS:
                layers[("invoke floor", precision)] = path

        everything = [*whole.values(), *layers.values()]
        for path in everything:  # the same file, timed on the built-in kernels
            builtin = path.with_name(path.stem + BUILTIN_SUFFIX)
            builtin.symlink_to(path)
        timed = [p for path in everything for p in (path, path.with_name(path.stem + BUILTIN_SUFFIX))]

        sessions = []
        for threads in threads_list:
            for session in range(FLAGS.sessions):
                print(f"session {session + 1}/{FLAGS.sessions}, {threads} thread(s): {len(timed)} models", flush=True)
                latencies_ms = device.side_by_side(timed, threads=threads, runs=FLAGS.runs, warmup=FLAGS.warmup,
                                                   passes=FLAGS.passes, progress=False)
                by_path = dict(zip(timed, latencies_ms, strict=True))
                sessions.append({"threads": threads, "session": session + 1, "ms": {
                    str(path.name): ms for path, ms in by_path.items()}})

    whole_rows = _whole_rows(whole, sessions)
    layer_rows = _layer_rows(layers, layer_macs, sessions)
    host = latency.describe_host()
    command = "python benchmarks/int8_profile.py " + " ".join(sys.argv[1:])
    minutes = (time.time() - started) / 60
    files.write_json(Path(FLAGS.output_dir) / "int8_profile.json", {
        "benchmark": "int8_profile", "command": command.strip(), "host": host, "tensorflow": tf.__version__,
        "litert": latency.interpreter.litert_version(), "threads": threads_list, "runs": FLAGS.runs,
        "passes": FLAGS.passes, "sessions": FLAGS.sessions, "minutes": round(minutes, 1),
        "op_lists": op_lists, "whole_models": whole_rows, "layers": layer_rows, "raw_sessions": sessions,
    })
    text = _markdown(command.strip(), host, tf.__version__, latency.interpreter.litert_version(), op_lists,
                     whole_rows, layer_rows, threads_list, minutes)
    files.write_text(Path(FLAGS.output_dir) / "int8_profile.md", text)
    print(text)


def _ms(sessions: list[dict[str, Any]], path: Path, threads: int, builtin: bool) -> list[float]:
    name = path.stem + BUILTIN_SUFFIX if builtin else path.name
    return [s["ms"][name] for s in sessions if s["threads"] == threads]


def _whole_rows(whole: dict[tuple[str, str], Path], sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for (model, precision), path in whole.items():
        for threads in sorted({s["threads"] for s in sessions}):
            for kernels in KERNELS:
                ms = _ms(sessions, path, threads, kernels == "builtin")
                base = (_ms(sessions, whole[(model, "float32")], threads, kernels == "builtin")
                        if (model, "float32") in whole else [None] * len(ms))
                rows.append({"model": model, "precision": precision, "kernels": kernels, "threads": threads,
                             "ms": ms, "ratio_to_float32": [None if b is None else m / b
                                                            for m, b in zip(ms, base, strict=True)]})
    return rows


def _layer_rows(layers: dict[tuple[str, str], Path], layer_macs: dict[str, int],
                sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for (name, precision), path in layers.items():
        if name == "invoke floor":
            continue
        for threads in sorted({s["threads"] for s in sessions}):
            for kernels in KERNELS:
                builtin = kernels == "builtin"
                floor = _ms(sessions, layers[("invoke floor", precision)], threads, builtin)
                net = [m - f for m, f in zip(_ms(sessions, path, threads, builtin), floor, strict=True)]
                float_net = [m - f for m, f in zip(_ms(sessions, layers[(name, "float32")], threads, builtin),
                                                   _ms(sessions, layers[("invoke floor", "float32")], threads,
                                                       builtin), strict=True)]
                rows.append({"layer": name, "macs": layer_macs[name], "precision": precision, "kernels": kernels,
                             "threads": threads, "ms": _ms(sessions, path, threads, builtin), "net_ms": net,
                             "invoke_floor_ms": floor,
                             "net_ratio_to_float32": [n / f if f > 0 else None for n, f in
                                                      zip(net, float_net, strict=True)]})
    return rows


def _fmt_list(values: list[float | None], pattern: str) -> str:
    return " / ".join("–" if v is None else format(v, pattern) for v in values)


def _markdown(command: str, host: dict[str, Any], tf_version: str, litert: str | None,
              op_lists: dict[str, dict[str, Any]], whole_rows: list[dict[str, Any]],
              layer_rows: list[dict[str, Any]], threads_list: list[int], minutes: float) -> str:
    lines = [
        "# Where int8 time goes in LiteRT (LeNet-5 and ResNet-20, Fashion-MNIST)", "",
        f"Command: `{command}` ({minutes:.0f} min)  ",
        f"Machine: {host['cpu']}, {host['cores']} cores ({host['machine']}), ISA {'/'.join(host['isa'])}, "
        f"TensorFlow {tf_version}, ai-edge-litert {litert}.  ",
        f"Latency: batch 1, LiteRT interpreter, median of {FLAGS.passes} interleaved passes × {FLAGS.runs} runs; all "
        f"models of one thread count in one session, {FLAGS.sessions} sessions (values `a / b` are the sessions). "
        "`xnnpack`: LiteRT's default (every tfcompress latency); `builtin`: "
        "`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`. Ratios < 1: faster than float32.", "",
        "## Op lists", "",
        "As `tfcompress.export.to_tflite` writes them; *italic* ops are left to LiteRT's built-in kernels by "
        "XNNPACK, the others run inside XNNPACK partitions.", "",
        "| model | I/O | XNNPACK partitions | ops |", "|---|---|---|---|",
    ]
    for name, description in op_lists.items():
        if " layer " in name:
            continue
        lines.append(f"| {name} | {description['input']} → {description['output']} | "
                     f"{description['xnnpack_partitions']} | {op_line(description)} |")
    lines += ["", "## Whole models", "", "| model | precision | kernels | threads | ms | ratio to float32 |",
              "|---|---|---|---|---|---|"]
    for row in whole_rows:
        lines.append(f"| {row['model']} | {row['precision']} | {row['kernels']} | {row['threads']} | "
                     f"{_fmt_list(row['ms'], '.3f')} | {_fmt_list(row['ratio_to_float32'], '.2f')} |")
    lines += ["", "## LeNet-5 layer by layer", "",
              "One-layer models with the real weights (int8: int8 I/O, so the op alone). `net µs`: time minus the "
              "one-weight model's (the cost of `invoke()` from Python).", "",
              "| layer | MACs | threads | kernels | float32 net µs | dynamic net µs | int8 net µs | dynamic / float32 "
              "| int8 / float32 |", "|---|---|---|---|---|---|---|---|---|"]
    index = {(r["layer"], r["precision"], r["kernels"], r["threads"]): r for r in layer_rows}
    for layer in dict.fromkeys(r["layer"] for r in layer_rows):
        for threads in threads_list:
            for kernels in KERNELS:
                f32, dyn, i8 = (index[(layer, p, kernels, threads)] for p in LAYER_PRECISIONS)
                lines.append(
                    f"| {layer} | {f32['macs']:,} | {threads} | {kernels} | "
                    f"{_fmt_list([1000 * v for v in f32['net_ms']], '.1f')} | "
                    f"{_fmt_list([1000 * v for v in dyn['net_ms']], '.1f')} | "
                    f"{_fmt_list([1000 * v for v in i8['net_ms']], '.1f')} | "
                    f"{_fmt_list(dyn['net_ratio_to_float32'], '.2f')} | "
                    f"{_fmt_list(i8['net_ratio_to_float32'], '.2f')} |")
    floor = [r for r in layer_rows if r["threads"] == threads_list[0] and r["kernels"] == "xnnpack"
             and r["precision"] == "float32"][:1]
    if floor:
        lines += ["", f"invoke() floor ({threads_list[0]} thread, XNNPACK, float32): "
                      f"{_fmt_list([1000 * v for v in floor[0]['invoke_floor_ms']], '.1f')} µs."]
    lines += ["", "## Reading", "",
              "- What is tfcompress's: the QUANTIZE/DEQUANTIZE at float I/O, per-channel weight scales and the "
              "dynamic batch (Flatten as SHAPE/STRIDED_SLICE/PACK/RESHAPE, two XNNPACK partitions). Compare the "
              "`int8` row with `int8_io`, `int8 per-tensor` and `int8 batch-1`.",
              "- What is the runtime's: XNNPACK runs int8 Conv2D/FullyConnected with its QS8-QC8W kernels; on AVX2 "
              "without VNNI these sign-extend to 16 bits and use `vpmaddwd` (`qs8-qc8w-gemm-*x8c8-minmax-fp32-avx2`, "
              "google/XNNPACK `src/configs/gemm-config.c`), 16 products per instruction against 8 for a float FMA, "
              "so compute-bound convolutions gain little; and its int8 convolution packs input channels in groups "
              "of kr = 8 (`k_stride = round_up_po2(group_input_channels, kr * sr)`, "
              "`src/operators/convolution-nhwc.c`), so a 1-channel first layer (conv1) does 8× the MACs. Only the "
              "weight-bound Dense layer (fc1: 1.6 MB float weights vs 0.4 MB int8) gains the full 3–4×, which is "
              "also all that dynamic-range quantization gains.",
              "- Two-thread sessions share the host's second core with other work: compare them only with care.",
              ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    app.run(main)
