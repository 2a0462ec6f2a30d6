"""The preprocessing doctor: which image preprocessing makes a Core ML file agree with TF.

The most common "predicts wrong after conversion" is not precision at all: the preprocessing
baked into the Core ML image input differs from the model's training preprocessing
(tf-coreml #91, #191, #207, #252; coremltools #953): double scaling against the model's own
``Rescaling`` layer, [0,1] given to a model trained on [-1,1], BGR against RGB, a wrong
mean/std. The doctor tests those causes by measurement, not by guessing:

1. it reads the file's own preprocessing (its input's ``colorSpace`` and the ``mul``/``add``
   ops coremltools inserted after the input, ``<input>__scaled__``/``<input>__biased__``);
2. for each candidate preprocessing (the dataset's, the usual ranges, the other channel
   order, the file's without its scale) it feeds the program the pixels that make the file's
   own preprocessing compute the candidate's, and measures agreement with TF on the data;
3. the candidate that restores agreement names the cause and gives the ``ct.ImageType``
   arguments to convert with. When none does, the drift is not in the preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from precision_sweep.data.preprocessing import Preprocessing

RANGES = {"[0, 1]": (1 / 255, 0.0), "[-1, 1]": (2 / 255, -1.0), "[0, 255]": (1.0, 0.0)}
# Caffe-style (keras.applications ResNet50/VGG preprocess_input): BGR, ImageNet means subtracted
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
SCREEN_SAMPLES = 512  # candidates are screened on at most this many test samples


@dataclass
class Trial:
    name: str
    preprocessing: Preprocessing
    agreement: float
    accuracy: float


@dataclass
class DoctorReport:
    """What the doctor measured: the file's own preprocessing, every candidate, the winner."""

    file: Preprocessing
    expected: Preprocessing
    own: Trial
    trials: list[Trial] = field(default_factory=list)
    fix: Trial | None = None
    causes: list[str] = field(default_factory=list)
    baseline_accuracy: float = float("nan")
    float16_gray: bool = False

    @property
    def found(self) -> bool:
        return self.fix is not None

    def text(self) -> str:
        head = (f"Preprocessing doctor: the Core ML image input computes {self.file.describe()} "
                f"(agreement with TF {self.own.agreement:.4f}, accuracy {100 * self.own.accuracy:.2f}% "
                f"against TF's {100 * self.baseline_accuracy:.2f}%).")
        if self.fix is None:
            return (f"{head} No candidate preprocessing ({len(self.trials)} tried: the dataset's, [0,1], [-1,1], "
                    "[0,255], the other channel order, no scaling) restores agreement, so the drift is not in the "
                    "preprocessing: see the per-op drift diagnosis (precision-diagnose RUN_ID).")
        return (f"{head} Cause: {'; '.join(self.causes)}. With {self.fix.preprocessing.describe()} the file agrees "
                f"(agreement {self.fix.agreement:.4f}, accuracy {100 * self.fix.accuracy:.2f}%). Convert with "
                f"{self.fix.preprocessing.image_type_source(self.float16_gray)}.")

    def table(self):
        import pandas as pd

        rows = [self.own, *self.trials]
        return pd.DataFrame(
            [{"candidate": t.name, "preprocessing": t.preprocessing.describe(),
              "image_type": _source_or_reason(t.preprocessing), "agreement": t.agreement, "accuracy": t.accuracy}
             for t in rows]
        )


def _source_or_reason(preprocessing: Preprocessing) -> str:
    from precision_sweep.errors import UserInputError

    try:
        return preprocessing.image_type_source()
    except UserInputError:
        return "(per-channel scale: no ImageType)"


def file_preprocessing(emulator, color_layout: str) -> Preprocessing:
    """The preprocessing of the program's image input: the ``mul``/``add`` coremltools put
    after it (scale 1 and bias 0 when absent) in the order of ``color_layout``."""
    name = emulator.input_names[0]
    scale, bias = 1.0, 0.0
    for step in emulator.plan.steps:  # names may carry a precision pass's suffix (_cast_fp16)
        if step.name.startswith(f"{name}__scaled__") and step.op_type == "mul":
            scale = float(np.asarray(step.const_kwargs.get("y", 1.0), dtype=np.float64).reshape(-1)[0])
        elif step.name.startswith(f"{name}__biased__") and step.op_type == "add":
            bias = np.asarray(step.const_kwargs.get("y", 0.0), dtype=np.float64).reshape(-1)
    return Preprocessing.from_image_type(scale, bias, color_layout)


def keras_preprocessing_layers(model) -> list[str]:
    """The Keras model's own preprocessing layers (``Rescaling``, ``Normalization``), described."""
    found = []
    for layer in getattr(getattr(model, "source_model", None), "layers", None) or []:
        kind = type(layer).__name__
        if kind == "Rescaling":
            found.append(f"Rescaling(scale={_short(layer.scale)}, offset={_short(layer.offset)}) "
                         f"(layer {layer.name!r})")
        elif kind == "Normalization":
            found.append(f"Normalization (layer {layer.name!r})")
    return found


def _short(value) -> str:
    return np.array2string(np.asarray(value, dtype=np.float64).round(6), separator=", ") if np.ndim(value) else f"{float(value):.6g}"


def _candidates(file: Preprocessing, expected: Preprocessing) -> list[tuple[str, Preprocessing]]:
    channels = file.channels
    orders = ("rgb", "bgr") if channels == 3 else ("rgb",)
    found = [("the dataset's preprocessing (what TF was fed)", expected)]
    for order in orders:
        found.append((f"the file's, {order.upper()}", Preprocessing(file.scale, file.bias, order)))
        found.append((f"the file's without its scale, {order.upper()}", Preprocessing.of(1.0, 0.0, channels, order)))
        for words, (scale, bias) in RANGES.items():
            found.append((f"{words} {order.upper()}", Preprocessing.of(scale, bias, channels, order)))
        if channels == 3:
            means = CAFFE_MEAN_BGR if order == "bgr" else CAFFE_MEAN_BGR[::-1]
            found.append((f"caffe mean subtraction, {order.upper()}", Preprocessing.of(1.0, [-m for m in means], 3, order)))
    if channels == 3:
        other = "bgr" if expected.channel_order == "rgb" else "rgb"
        found.append(("the dataset's, other channel order", Preprocessing(expected.scale, expected.bias, other)))
    unique: list[tuple[str, Preprocessing]] = []
    for name, candidate in found:
        if not any(candidate.close_to(kept, 1e-6) for _, kept in unique):
            unique.append((name, candidate))
    return unique


def feed_for(candidate: Preprocessing, file: Preprocessing, pixels: np.ndarray) -> np.ndarray:
    """The NCHW program input with which the file's own preprocessing computes what
    ``candidate`` computes from ``pixels`` (RGB or grayscale NHWC)."""
    wanted = candidate.apply(pixels).astype(np.float64)
    program_input = (wanted - np.asarray(file.bias)) / np.asarray(file.scale)
    return np.ascontiguousarray(np.transpose(program_input, (0, 3, 1, 2)), dtype=np.float32)


def _measure(predict, candidate: Preprocessing, file: Preprocessing, pixels, reference_top1: np.ndarray,
             labels: np.ndarray, batch: int) -> tuple[float, float]:
    """Agreement with the reference and accuracy of the program fed ``pixels`` as ``candidate``
    preprocesses them, a batch at a time (``pixels`` may be streamed from their files)."""
    outputs = np.concatenate([predict(feed_for(candidate, file, pixels[i:i + batch])) for i in range(0, len(pixels), batch)])
    predicted = outputs.argmax(axis=-1)
    return float(np.mean(predicted == reference_top1)), float(np.mean(predicted == labels))


def diagnose_preprocessing(predict, pixels: np.ndarray, baseline: np.ndarray, labels: np.ndarray, file: Preprocessing,
                           expected: Preprocessing, keras_layers: list[str], threshold: float = 0.99,
                           batch: int = 64, float16_gray: bool = False) -> DoctorReport:
    """Measure the candidate preprocessings of an image-input program (see the module docstring).

    ``predict(program_input) -> scores`` runs the program; ``pixels``, ``baseline`` and
    ``labels`` are the test split (screened on its first :data:`SCREEN_SAMPLES`, the winner
    confirmed on all of it).
    """
    n = min(len(pixels), SCREEN_SAMPLES)
    reference = baseline.argmax(axis=-1)
    agreement, accuracy = _measure(predict, file, file, pixels, reference, labels, batch)
    own = Trial("the file's own", file, agreement, accuracy)
    report = DoctorReport(file, expected, own, baseline_accuracy=float(np.mean(reference == labels)),
                          float16_gray=float16_gray)
    for name, candidate in _candidates(file, expected):
        if candidate.close_to(file, 1e-6):
            continue
        agreement, accuracy = _measure(predict, candidate, file, pixels[:n], reference[:n], labels[:n], batch)
        report.trials.append(Trial(name, candidate, agreement, accuracy))
    usable = [t for t in report.trials if t.agreement >= threshold and _expressible(t.preprocessing)]
    if usable:
        best = max(usable, key=lambda t: (round(t.agreement, 4), t.preprocessing.close_to(expected), t.accuracy))
        agreement, accuracy = _measure(predict, best.preprocessing, file, pixels, reference, labels, batch)
        if agreement >= threshold and agreement > own.agreement:
            report.fix = Trial(best.name, best.preprocessing, agreement, accuracy)
            report.causes = causes(file, best.preprocessing, keras_layers)
    return report


def _expressible(preprocessing: Preprocessing) -> bool:
    return bool(np.allclose(preprocessing.scale, preprocessing.scale[0], rtol=1e-6, atol=0))


def causes(file: Preprocessing, fix: Preprocessing, keras_layers: list[str]) -> list[str]:
    """The named differences between the file's preprocessing and the one that agrees."""
    found = []
    if file.channels == 3 and file.channel_order != fix.channel_order:
        found.append(f"swapped channel order: the file feeds {file.channel_order.upper()} to a model that "
                     f"expects {fix.channel_order.upper()}")
    same_order = Preprocessing(file.scale, file.bias, fix.channel_order)
    if same_order.close_to(fix):
        return found
    ratio = np.asarray(file.scale) / np.asarray(fix.scale)
    rescaling = [layer for layer in keras_layers if layer.startswith(("Rescaling", "Normalization"))]
    if rescaling and np.allclose(ratio, ratio[0]) and ratio[0] < 0.5 and np.allclose(fix.bias, 0, atol=1e-6):
        found.append(f"double scaling: the model already scales its input ({', '.join(rescaling)}) and the "
                     f"ImageType scales by {ratio[0]:.6g} again")
        return found
    file_range, fix_range = file.describe().split(" ")[0], fix.describe().split(" ")[0]
    if file_range in ("[0,", "[-1,") or fix_range in ("[0,", "[-1,"):
        file_words, fix_words = file.describe().rsplit(" ", 1)[0], fix.describe().rsplit(" ", 1)[0]
        found.append(f"input range: the file gives {file_words} to a model that expects {fix_words}")
    else:
        found.append(f"mean/std mismatch: the file computes {file.describe()}, the model expects {fix.describe()}")
    return found
