"""Knowledge distillation: train a student on a teacher's softened outputs (Hinton et al. 2015, as the NetAdapt
thesis trained its pruned networks).

    distiller = tfcompress.distill.Distiller(student, teacher, alpha=0.1, temperature=5)
    distiller.compile(optimizer)
    distiller.fit(train, epochs=..., callbacks=[...])     # any tfcompress callback: EC2T, TTQ, Fisher, masks
    distiller.student                                      # the trained student, the model to save and export

The loss is the thesis's (``training_from_scratch/losses.py``)::

    alpha · CE(y, softmax(z)) + (1 − alpha) · T² · CE(softmax(z_teacher / T), softmax(z / T))

with its code's defaults ``alpha = 0.1`` (the weight of the *hard* loss) and ``T = 5``; its report's best setting
on CIFAR-10 was ``alpha = 0.2, T = 2`` (grid alpha ∈ {0.02, 0.1, 0.2}, T ∈ {2, 5, 10}). Regularization losses of
the student (weight decay, compression regularizers) are added as they are, and so is the term a training wrapper
of the student adds to any loss (its ``training_penalty()``: MorphNet's regularizer, with
``Distiller(MorphNetModel(student), teacher)``); the teacher's never are.

A model ending in a softmax is taken at its log-probabilities, which are logits up to a constant (softmax and
both cross-entropies are unchanged by one): teacher and student may each output logits or probabilities.
Teacher logits of a non-augmented dataset can be computed once (:func:`cache_teacher_logits`, an NPZ) and fed
with the data (:func:`with_teacher_logits`): the distiller then never runs the teacher.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress import files, training

THESIS_DEFAULTS = {"alpha": 0.1, "temperature": 5.0}  # NatGr/Master_Thesis losses.py / train_save.py flags
THESIS_BEST = {"alpha": 0.2, "temperature": 2.0}  # the thesis report's chosen values (CIFAR-10, WRN students)


def _as_logits(outputs: tf.Tensor, softmax: bool) -> tf.Tensor:
    return keras.ops.log(keras.ops.maximum(outputs, 1e-12)) if softmax else outputs


@keras.saving.register_keras_serializable(package="tfcompress")
class Distiller(keras.Model):
    """A student trained by ``fit`` on ``alpha`` × the labels' cross-entropy + (1 − ``alpha``) × T² × the
    cross-entropy of the teacher's softened outputs (see the module docstring); predicts as the student.

    The teacher is never trained (its weights are not among the distiller's trainable weights; the model
    itself is left as it was, trainable, since it is often the user's original, pruned or trained next) and
    always runs in inference mode. ``save``
    writes the student alone: the file is the compressed model, not the training set-up. The tfcompress callbacks
    act on the student (:func:`tfcompress.training.student_of`). Batches are ``(x, y)``, or ``((x, teacher_logits),
    y)`` from :func:`with_teacher_logits`.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model | None = None, *, alpha: float = 0.1,
                 temperature: float = 5.0, **kwargs: Any):
        super().__init__(name=kwargs.pop("name", f"{student.name}_distiller"), **kwargs)
        if not 0.0 <= alpha <= 1.0 or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"Distiller needs 0 ≤ alpha ≤ 1 and a temperature > 0; got alpha={alpha}, "
                             f"temperature={temperature}")
        for role, model in (("student", student), ("teacher", teacher)):
            if model is not None and not isinstance(model, keras.Model):
                raise TypeError(f"Distiller's {role} must be a keras.Model, got {type(model).__name__}")
        core = training.student_of(student)  # a training wrapper's model (MorphNetModel) has the graph
        if teacher is not None:
            _check_same_io(core, teacher)
        self.student, self.teacher = student, teacher
        self.alpha, self.temperature = float(alpha), float(temperature)
        self._student_softmax = training.softmax_output(core) is not None
        self._teacher_softmax = teacher is not None and training.softmax_output(teacher) is not None
        self._hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self._soft = keras.losses.CategoricalCrossentropy(from_logits=True)
        self.built = student.built  # its variables are the student's and the teacher's (BackupAndRestore asks)

    @property
    def trainable_weights(self) -> list:
        """The student's: the optimizer never sees the teacher's."""
        return self.student.trainable_weights if self.trainable else []

    @property
    def trainable_variables(self) -> list:
        return self.trainable_weights

    def compile(self, optimizer: keras.optimizers.Optimizer | str = "adam", **kwargs: Any) -> None:
        """``keras.Model.compile`` with the distillation loss and top-1 ``accuracy`` (of the student)."""
        if "loss" in kwargs:
            raise ValueError("Distiller.compile takes no loss: the loss is the distillation loss (alpha, temperature)")
        kwargs.setdefault("metrics", [keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        super().compile(optimizer=optimizer, **kwargs)

    def call(self, inputs: Any, training: bool = False) -> tf.Tensor:
        images = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
        return self.student(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if isinstance(x, (tuple, list)):
            teacher_logits = keras.ops.cast(x[1], y_pred.dtype)
        elif self.teacher is not None:
            teacher_logits = _as_logits(self.teacher(x, training=False), self._teacher_softmax)
        else:
            raise ValueError("Distiller has no teacher: give one, or feed cached teacher logits "
                             "(tfcompress.distill.with_teacher_logits)")
        logits = _as_logits(y_pred, self._student_softmax)
        t = self.temperature
        loss = self.alpha * self._hard(y, logits, sample_weight)
        if self.alpha < 1.0:
            targets = keras.ops.softmax(teacher_logits / t, axis=-1)
            loss = loss + (1.0 - self.alpha) * t * t * self._soft(targets, logits / t, sample_weight)
        extra = [keras.ops.sum(value) for value in self.student.losses]  # not the teacher's regularizers
        penalty = getattr(self.student, "training_penalty", None)  # a wrapper's own term (MorphNetModel)
        if penalty is not None:
            extra.append(penalty())
        if extra:  # scaled per replica as Keras scales its own (the gradients of the replicas are summed)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = loss + keras.ops.sum(keras.ops.stack(extra)) / replicas
        return loss

    def save(self, filepath: str | Path, *args: Any, **kwargs: Any) -> None:
        """Saves the student alone (the teacher is the training set-up, not the result)."""
        self.student.save(filepath, *args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {"student": keras.saving.serialize_keras_object(self.student),
                "teacher": None if self.teacher is None else keras.saving.serialize_keras_object(self.teacher),
                "alpha": self.alpha, "temperature": self.temperature, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Distiller:
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        teacher = config.pop("teacher")
        return cls(student, None if teacher is None else keras.saving.deserialize_keras_object(teacher), **config)


def _check_same_io(student: keras.Model, teacher: keras.Model) -> None:
    """One-line errors for a teacher that cannot teach this student: other input or output shapes."""
    for what in ("inputs", "outputs"):
        tensors = [getattr(model, what) for model in (student, teacher)]
        if any(len(t) != 1 for t in tensors):
            raise ValueError(f"Distiller takes models with one {what[:-1]}; student {student.name!r} or teacher "
                             f"{teacher.name!r} has several")
        shapes = [tuple(t[0].shape[1:]) for t in tensors]
        if shapes[0] != shapes[1]:
            raise ValueError(f"the teacher {teacher.name!r} has {what[:-1]} shape {shapes[1]} but the student "
                             f"{student.name!r} has {shapes[0]}: distil between models of the same task and input "
                             "size")


# ------------------------------------------------------------------------------------- cached teacher logits


def cache_teacher_logits(teacher: keras.Model, dataset: tf.data.Dataset, path: str | Path) -> np.ndarray:
    """The teacher's logits for every example of ``dataset`` (batched ``(x, y)``, in its order), written to
    ``path`` (NPZ: ``logits``, ``labels``, ``examples``; atomically) and returned.

    Only for data without random augmentation: the cached logits belong to one fixed image each.
    """
    training.check_finite(teacher, f"teacher {teacher.name!r}")
    softmax = training.softmax_output(teacher) is not None
    outputs = teacher.predict(dataset.map(lambda x, y: x), verbose=0)
    logits = np.asarray(_as_logits(outputs, softmax), np.float32)
    if not np.isfinite(logits).all():
        raise training.NonFiniteError(f"teacher {teacher.name!r} gives NaN or infinite logits on the dataset")
    labels = np.concatenate([np.asarray(y) for _, y in dataset])
    with files.atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, logits=logits, labels=labels, examples=np.int64(len(labels)))
    return logits


def with_teacher_logits(dataset: tf.data.Dataset, path: str | Path) -> tf.data.Dataset:
    """``dataset`` (batched ``(x, y)``, the same examples in the same order as when the logits were cached)
    as ``((x, teacher_logits), y)`` batches for a :class:`Distiller`.

    Raises:
        ValueError: the cache holds another number of examples, or other labels.
    """
    with np.load(Path(path)) as cache:
        logits, labels = cache["logits"], cache["labels"]
    seen = np.concatenate([np.asarray(y) for _, y in dataset])
    if len(seen) != len(labels) or not np.array_equal(seen, labels):
        raise ValueError(f"{path} holds teacher logits of {len(labels)} other examples than the dataset's "
                         f"{len(seen)}: cache them again with cache_teacher_logits on this dataset, unshuffled")
    sizes = [int(tf.shape(y)[0]) for _, y in dataset]
    batches = tf.data.Dataset.from_tensor_slices(logits).batch(max(sizes))
    if len(set(sizes[:-1])) > 1 or (len(sizes) > 1 and sizes[-1] > sizes[0]):
        raise ValueError("with_teacher_logits needs a dataset of equal batches (the last may be smaller)")
    return tf.data.Dataset.zip((dataset, batches)).map(lambda xy, t: ((xy[0], t), xy[1]))
