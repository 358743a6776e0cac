"""Scoring models trained elsewhere as exported model files (a CSV of predicted sums: predictions.py).

They are scored with the same `metrics.compute_metrics` as the runner's own checkpoints, on
any dataset `data.load_path` reads (course files, an .npz from `digitsum-bench data make`).

A model file maps a float batch (B,1,40,168) to sums (B,), 37 logits (B,37) or digit logits
(B,4,10); the head is read from the output shape. It carries `digitsum.json` saying how pixels
are normalised: `x = (uint8 / 255 - mean) / std`. Its format decides how far it is trusted:

- ONNX (the default, and the format for strangers' models): a graph of tensor operations run by
  onnxruntime on the CPU. It has no file, process or Python operations, so it is loaded without
  trust; `digitsum.json` is a metadata property. A tensor stored outside the file is refused wherever it sits
  (initializers, sparse tensors, attributes, subgraphs, functions): onnxruntime would read that file from the
  scorer's disk. Its runs stop after `max_seconds` (an endless `Loop` is a valid graph).
- A `torch.export` program (`.pt2`) or a TorchScript file is a program that runs with the user's
  rights: loaded only with `trust=True` (`--trust-model`), and a `.pt2` archive entry that needs
  full pickle (or compiled code) is refused even then.

`export_checkpoint` writes our own runs in these formats, test-time shifts included, so that
they score as their checkpoints do.
"""

from __future__ import annotations

import io
import json
import math
import re
import tempfile
import threading
import warnings
import zipfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

from .. import data as datamod
from ..engine import metrics
from ..engine.train import EVAL_BATCH
from ..errors import BenchError, clip, first_line
from ..store import atomic_write
from .predictions import score, write_predictions

META_FILE = "digitsum.json"  # the metadata file inside an exported model's archive
META_FORMAT = "digitsum-bench model 1"
BATCH = EVAL_BATCH["cpu"]  # the batch `train.predict` uses on a CPU: the same batches give the same floating-point sums
MAX_MODEL_BYTES = 2**31  # an ONNX file is read whole (protobuf's own limit); larger is refused first
MAX_SECONDS = 3600.0  # an ONNX model's scoring stops after this: a real model takes minutes, an endless Loop forever
FORMATS = ("onnx", "export", "torchscript")  # what `export_checkpoint` writes
TRUST_HINT = ("it is a program that runs with your rights: load it only if you trust its author (--trust-model), "
              "or hand in ONNX (`digitsum-bench export` writes it)")
# The entries of a torch.export archive (below its root folder) whose loading needs no full pickle;
# anything else (legacy weight files, pickled or custom objects, AOTInductor's compiled code) is refused.
PT2_ENTRY = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                       r"|models/\w+\.json|data/weights/(weight_\d+|\w+_weights_config\.json)"
                       r"|data/constants/(tensor_\d+|\w+_constants_config\.json)|data/sample_inputs/\w+\.pt|extra/[^/]+)",
                       re.ASCII)


# ----------------------------------------------------------------------------------------
# Exported models
# ----------------------------------------------------------------------------------------


def load_model(path: str | Path, trust: bool = False) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """A callable model and its metadata from an ONNX file, or, with `trust`, a torch.export program
    or a TorchScript file (programs: they run with the user's rights)."""
    path = Path(path)
    if not path.exists():
        raise BenchError(f"{path}: no such model file")
    if not path.is_file():
        raise BenchError(f"{path}: not a regular file")
    if not zipfile.is_zipfile(path):
        return _load_onnx(path)
    kind = _archive_kind(path)
    name = {"export": "torch.export program (.pt2)", "torchscript": "TorchScript file"}[kind]
    if not trust:
        raise BenchError(f"{path}: a {name} is refused: {TRUST_HINT}")
    extra = {META_FILE: ""}
    if kind == "export":
        _check_pt2(path)
    try:
        if kind == "export":
            model = torch.export.load(path, extra_files=extra).module()
        else:
            with warnings.catch_warnings():  # TorchScript is deprecated, yet people still hand it in
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:  # noqa: BLE001 - a damaged archive is reported in one line
        raise BenchError(f"{path}: cannot load the {kind} model ({first_line(e)})") from None
    return model, _read_meta(path, extra[META_FILE])


class OnnxModel:
    """An ONNX graph run by onnxruntime on the CPU, called like a torch model: a tensor in, a tensor out."""

    def __init__(self, session) -> None:
        import onnxruntime as ort

        self.session = session
        self.input = session.get_inputs()[0].name
        self.run_options = ort.RunOptions()  # its `terminate` flag stops a run between operators and loop steps
        self.seconds = math.inf

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        try:
            (out,) = self.session.run(None, {self.input: x.numpy()}, self.run_options)
        except Exception:
            if self.run_options.terminate:
                raise BenchError(f"scoring stopped after {self.seconds:g} s (--max-seconds)") from None
            raise
        return torch.from_numpy(out) if isinstance(out, np.ndarray) else out  # anything else is refused by the caller

    @contextmanager
    def time_bound(self, seconds: float) -> Iterator[None]:
        """Within the block, runs fail once `seconds` have passed: a watchdog sets onnxruntime's terminate flag."""
        self.seconds = seconds
        watchdog = threading.Timer(seconds, setattr, (self.run_options, "terminate", True))
        watchdog.daemon = True
        watchdog.start()
        try:
            yield
        finally:
            watchdog.cancel()


def _load_onnx(path: Path) -> tuple[OnnxModel, dict]:
    """An ONNX model (no trust needed: its operations only compute on tensors) and its `digitsum.json` property."""
    import onnx
    import onnxruntime as ort

    not_a_model = f"{path}: not an ONNX model, torch.export program (.pt2) or TorchScript file"
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise BenchError(f"{not_a_model} (over {MAX_MODEL_BYTES >> 30} GiB)")
    raw = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(raw)
    except Exception as e:  # noqa: BLE001 - protobuf's errors for bytes that are not a model
        raise BenchError(f"{not_a_model} ({first_line(e)})") from None
    if not proto.ir_version or not proto.graph.output:
        raise BenchError(not_a_model)
    outside = _outside_tensor(proto)
    if outside is not None:
        raise BenchError(f"{path}: tensor {clip(outside)!r} is stored outside the file; only self-contained ONNX "
                         "files are read (save with external_data=False)")
    meta = _read_meta(path, {p.key: p.value for p in proto.metadata_props}.get(META_FILE, ""), onnx=True)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: its errors come back as exceptions, told in one line below
    options.intra_op_num_threads = torch.get_num_threads()
    # a model from bytes has its external data resolved against the working directory: give it an empty folder
    # instead, so that a tensor outside the file that slipped past the check above finds nothing to read
    with tempfile.TemporaryDirectory() as empty:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
        try:
            session = ort.InferenceSession(raw, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - an invalid graph or an unknown operator, in one line
            raise BenchError(f"{path}: cannot load the ONNX model ({first_line(e)})") from None
    if len(session.get_inputs()) != 1 or len(session.get_outputs()) != 1:
        raise BenchError(f"{path}: the ONNX model has {len(session.get_inputs())} inputs and "
                         f"{len(session.get_outputs())} outputs; expected one of each")
    return OnnxModel(session), meta


def _outside_tensor(proto) -> str | None:
    """The name of a tensor of an ONNX model stored outside its file, or None.

    Every message of the model is visited, not a list of the places tensors sit today (initializers, sparse
    initializers, `value` and `sparse_value` attributes, subgraphs, functions, training info): onnxruntime
    reads external data wherever it finds it."""
    import onnx
    from google.protobuf.message import Message

    messages = [proto]
    while messages:
        message = messages.pop()
        if isinstance(message, onnx.TensorProto) and (onnx.external_data_helper.uses_external_data(message)
                                                       or message.external_data):
            return message.name
        for field, value in message.ListFields():
            if field.type == field.TYPE_MESSAGE:
                messages += [value] if isinstance(value, Message) else value
    return None


def _check_pt2(path: Path) -> None:
    """Refuse a torch.export archive that would unpickle anything but tensors, or load compiled code."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        root = names[0].split("/")[0] + "/" if names else ""
        # a name twice: torch's zip reader and Python's may each read another of the two
        strange = [n for n in names if not (n.startswith(root) and PT2_ENTRY.fullmatch(n[len(root):]))
                   or names.count(n) > 1]
        if strange:
            raise BenchError(f"{path}: archive entry {strange[0]!r} is not plain tensors and data; refused even "
                             "with --trust-model")
        for name in names:
            entry = name[len(root):]
            if entry.endswith("_config.json"):
                try:
                    config = json.loads(z.read(name))["config"]
                    pickled = [k for k, v in config.items() if v.get("use_pickle")]
                except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
                    raise BenchError(f"{path}: bad archive entry {entry} ({first_line(e)})") from None
                if pickled:
                    raise BenchError(f"{path}: archive entry {entry} needs full pickle for {pickled[0]!r}; "
                                     "refused even with --trust-model")
            elif entry.startswith("data/sample_inputs/"):
                try:
                    torch.load(io.BytesIO(z.read(name)), weights_only=True)
                except Exception:  # noqa: BLE001 - torch would retry it with full pickle
                    raise BenchError(f"{path}: archive entry {entry} needs full pickle; refused even with "
                                     "--trust-model") from None


def _archive_kind(path: Path) -> str:
    """'export' or 'torchscript', from the names inside the zip archive both formats are."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile) as e:
        raise BenchError(f"{path}: not a torch.export program (.pt2) or TorchScript file ({first_line(e)})") from None
    if any(n.endswith("archive_format") for n in names):
        return "export"
    if any(n.endswith("/data.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        raise BenchError(f"{path}: a torch.save file, not an exported model; score a runner checkpoint with "
                         "--checkpoint, or convert it with `digitsum-bench export`")
    raise BenchError(f"{path}: a zip archive, but neither a torch.export program (.pt2) nor a TorchScript file")


def _read_meta(path: Path, text: str | bytes, onnx: bool = False) -> dict:
    if not text:
        how = (f"onnx.helper.set_model_props(model, {{'{META_FILE}': json.dumps({{'mean': ..., 'std': ...}})}})" if onnx
               else f"save with extra_files={{'{META_FILE}': json.dumps({{'mean': ..., 'std': ...}})}}")
        raise BenchError(f"{path}: no {META_FILE} in the {'metadata' if onnx else 'archive'}, so the input "
                         f"normalisation is unknown ({how})")
    try:
        meta = json.loads(text)
        mean, std = float(meta["mean"]), float(meta["std"])
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        raise BenchError(f"{path}: bad {META_FILE} (needs numbers 'mean' and 'std'; {first_line(e)})") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise BenchError(f"{path}: bad {META_FILE}: std must be positive and both numbers finite")
    decode = meta.get("decode", "sum_of_digits")
    if decode not in ("sum_of_digits", "most_likely_sum"):
        raise BenchError(f"{path}: bad {META_FILE}: decode {clip(repr(decode))} is not sum_of_digits or most_likely_sum")
    return {**meta, "mean": mean, "std": std, "decode": decode}


def head_of(shape: tuple[int, ...], batch: int) -> str:
    """The head type from a model's output shape for a batch of `batch` images."""
    shape = tuple(shape)
    if shape in ((batch,), (batch, 1)):
        return "regression"
    if shape == (batch, metrics.N_SUMS):
        return "sum37"
    if shape == (batch, 4, 10):
        return "digits4"
    raise BenchError(f"output shape {shape} for {batch} images is none of (B,) sums, (B,37) logits, (B,4,10) digit logits")


@torch.no_grad()
def predict_model(model: nn.Module, meta: dict, images: np.ndarray, path: str | Path = "model") -> tuple[torch.Tensor, str]:
    """Raw outputs (N,...) float32 for uint8 images (N,40,168), and the head read from their shape."""
    outs, head = [], None
    for start in range(0, len(images), BATCH):
        chunk = torch.from_numpy(images[start:start + BATCH])
        x = chunk.unsqueeze(1).float().div_(255).sub_(meta["mean"]).div_(meta["std"])  # as train.to_input
        try:
            out = model(x)
        except BenchError as e:  # an ONNX model stopped at its time bound
            raise BenchError(f"{path}: {e}") from None
        except Exception as e:  # noqa: BLE001 - whatever the program raises, the user needs one line
            raise BenchError(f"{path}: the model fails on a (B,1,40,168) float batch ({first_line(e)})") from None
        if not isinstance(out, torch.Tensor):
            raise BenchError(f"{path}: the model returns {type(out).__name__}, not one tensor")
        try:
            this = head_of(out.shape, len(chunk))
        except BenchError as e:
            raise BenchError(f"{path}: {e}") from None
        head = head or this
        if this != head:
            raise BenchError(f"{path}: the output shape changes between batches ({tuple(out.shape)})")
        outs.append(out.float().reshape(len(chunk), -1) if head == "regression" else out.float())
    out = torch.cat(outs)
    if not torch.isfinite(out).all():
        raise BenchError(f"{path}: the model outputs NaN or inf")
    return (out.reshape(-1) if head == "regression" else out), head


def evaluate_model(model_path: str | Path, data_path: str | Path, save_predictions: str | Path | None = None,
                   trust: bool = False, max_seconds: float | None = None) -> dict:
    """Score an exported model on a dataset; optionally write its predictions as a CSV.

    `trust` lets a torch.export program or TorchScript file run (see `load_model`). An ONNX model's scoring
    stops after `max_seconds` (None: MAX_SECONDS); a program has no such bound."""
    seconds = MAX_SECONDS if max_seconds is None else max_seconds
    if not 0 < seconds <= threading.TIMEOUT_MAX:
        raise BenchError(f"--max-seconds {seconds}: expected a positive number of seconds, at most "
                         f"{threading.TIMEOUT_MAX:.3g}")
    model, meta = load_model(model_path, trust)
    data = datamod.load_path(data_path)
    with model.time_bound(seconds) if isinstance(model, OnnxModel) else nullcontext():
        out, head = predict_model(model, meta, data.images, model_path)
    pred = metrics.predict_sums(out, head, meta["decode"]).numpy()
    raw = metrics.expected_sums(out, head).numpy()
    if save_predictions is not None:
        write_predictions(save_predictions, pred, raw)
    return {"recipe": str(meta.get("recipe", "-"))[:100], "model": str(model_path), "head": head, "data": str(data_path),
            **score(pred, data.sums, raw, model_path)}


class Predictor(nn.Module):
    """A runner model as it predicts in `train.predict`: outputs averaged over test-time shifts."""

    def __init__(self, model: nn.Module, shifts: tuple[int, ...], normalize: str) -> None:
        super().__init__()
        self.model = model
        self.shifts = shifts
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..engine.train import shift

        # the same expression as train.predict, so that the sums round the same way
        return sum(self.model(shift(x, s, self.normalize)).float() for s in self.shifts) / len(self.shifts)


def export_checkpoint(checkpoint: str | Path, out: str | Path, fmt: str = "onnx") -> dict:
    """Write a runner checkpoint as ONNX (the default), a torch.export program or TorchScript; returns the metadata."""
    from ..engine.checkpoints import load_checkpoint  # the registry and every model: only export needs them
    from ..engine.train import TTA_SHIFTS

    if fmt not in FORMATS:
        raise BenchError(f"export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    model, recipe = load_checkpoint(checkpoint, torch.device("cpu"))
    if recipe.head not in ("regression", "sum37", "digits4"):
        raise BenchError(f"{checkpoint}: recipe {recipe.name}'s head {recipe.head} does not predict sums; nothing to export")
    shifts = TTA_SHIFTS if recipe.tta else (0,)
    predictor = Predictor(model.float(), shifts, recipe.normalize).eval()
    mean, std = (datamod.COURSE_MEAN, datamod.COURSE_STD) if recipe.normalize == "course" else (0.0, 1.0)
    meta = {"format": META_FORMAT, "recipe": recipe.name, "head": recipe.head, "decode": recipe.decode,
            "mean": mean, "std": std, "tta_shifts": list(shifts),
            "input": "float (B,1,40,168): uint8 pixels / 255, then (x - mean) / std"}
    example = torch.zeros(2, 1, datamod.HEIGHT, datamod.WIDTH)
    batch = ({0: torch.export.Dim("batch")},)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' advice (TorchScript is deprecated, ...) is not the user's
            if fmt == "onnx":
                # the dynamo exporter: the legacy one cannot export adaptive pooling to a size it computes
                program = torch.onnx.export(predictor, (example,), dynamo=True, dynamic_shapes=batch, verbose=False,
                                            external_data=False)
            elif fmt == "export":
                program = torch.export.export(predictor, (example,), dynamic_shapes=batch)
            else:
                program = torch.jit.trace(predictor, example, check_trace=False)
    except Exception as e:  # noqa: BLE001 - a model torch cannot trace is reported in one line
        raise BenchError(f"{checkpoint}: cannot export recipe {recipe.name} as {fmt} ({first_line(e)})") from None
    with atomic_write(Path(out)) as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if fmt == "onnx":
            import onnx

            proto = program.model_proto
            onnx.helper.set_model_props(proto, {META_FILE: json.dumps(meta)})
            f.write(proto.SerializeToString())
        elif fmt == "export":
            torch.export.save(program, f, extra_files={META_FILE: json.dumps(meta)})
        else:
            torch.jit.save(program, f, _extra_files={META_FILE: json.dumps(meta)})
    return meta
