"""CPU int8 in OpenVINO, the runtime side: the registry entry "openvino-int8" builds from here.

- `OpenVinoIRBackend`: an OpenVINO IR (.xml + .bin) carrying hrpose's metadata in its rt_info (`IR_META_KEY`,
  the same JSON as hrpose checkpoints' `hrpose_meta`; `IR_INT8_KEY`: the quantisation report), on the CPU;
  `save_ir` / `read_ir` write and read such an IR.
- `quantize_crops`: a torch model exported (self-checked), converted to OpenVINO and quantised by NNCF on given
  normalised crops (and their mirrors with the flip test), every layer int8: the bench row and the
  `calibration=` option of `make_backend("openvino-int8", model, ...)`.
- Quantisation on a user's calibration folder with accuracy control (COCO AP of held-out people) needs the
  data pipeline and the decoder, which sit above the runtime: it lives in `hrpose.quantize`, which hands the
  registry an `Int8Quantizer` (`BuildRequest.int8_quantizer`).

The packages are the optional `int8` extra (nncf, openvino); without them every entry point raises
`BackendUnavailableError` naming the extra.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from hrpose.errors import BackendUnavailableError, UserError

from .openvino_backend import keep_sigaltstack, openvino_config

logger = logging.getLogger(__name__)

IR_META_KEY = ["hrpose", "meta"]
IR_INT8_KEY = ["hrpose", "int8"]
#: the AP drop (in AP points, 0..100 scale) accuracy control allows by default
DEFAULT_MAX_AP_DROP = 0.5
#: crops (before mirroring) NNCF calibrates on by default
DEFAULT_CALIB_CROPS = 300


#: the one line a GPU device gets for int8 (no GPU int8 path is built or measured)
GPU_REFUSAL = ("--precision int8 runs on the CPU (OpenVINO int8); no GPU int8 path is offered: on a GPU use "
               "--precision fp16 or bf16, or --device cpu for int8")  # fmt: skip


class Int8Error(UserError, ValueError):
    """Bad calibration input or an IR that does not belong to the model: one line naming what and how to fix."""


def require_int8() -> None:
    """`BackendUnavailableError` unless nncf and openvino (the `int8` extra) import."""
    import importlib.util

    missing = [m for m in ("openvino", "nncf") if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailableError(
            f"int8: {' and '.join(missing)} not installed (pip install 'hrpose[int8]'); use --precision fp32"
        )


def calibration_inputs(crops: np.ndarray, flip_test: bool) -> list[np.ndarray]:
    """One (1, 3, H, W) input per crop, and per mirrored crop with the flip test (what the network meets)."""
    out = [np.ascontiguousarray(c[None]) for c in crops]
    if flip_test:
        out += [np.ascontiguousarray(c[None, :, :, ::-1]) for c in crops]
    return out


# --------------------------------------------------------------------------------------------------------------
# the OpenVINO model
def openvino_fp32_model(model: nn.Module, input_size_wh: tuple[int, int]) -> Any:
    """`model` exported to ONNX (dynamic batch, self-checked against PyTorch, `hrpose.export`) and converted
    to an in-memory `openvino.Model` (fp32)."""
    import openvino as ov

    from hrpose.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="hrpose-int8-") as tmp:
        report = export_onnx(model, Path(tmp) / "model.onnx", input_size_wh, dynamic_batch=True)
        with keep_sigaltstack():
            return ov.convert_model(str(report.path))


def fp32_layers(ov_model: Any) -> list[str]:
    """Names of the convolutions of an (NNCF-quantised) OpenVINO model whose data input is not quantised
    (no FakeQuantize in front): the layers that run in fp32."""
    kept = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "ConvolutionBackpropData"):
            continue
        src = op.input_value(0).get_node()
        if src.get_type_name() != "FakeQuantize":
            kept.append(op.get_friendly_name())
    return kept


def conv_count(ov_model: Any) -> int:
    return sum(op.get_type_name() in ("Convolution", "GroupConvolution", "ConvolutionBackpropData")
               for op in ov_model.get_ordered_ops())  # fmt: skip


class CompiledRunner:
    """An OpenVINO compiled model (or `openvino.Model`, compiled here) as an hrpose backend callable."""

    def __init__(self, compiled: Any, *, name: str = "openvino-int8", threads: int | None = None) -> None:
        import openvino as ov

        with keep_sigaltstack():
            if isinstance(compiled, ov.Model):
                compiled = ov.Core().compile_model(compiled, "CPU", openvino_config(threads))
            self.compiled = compiled
            self.request = compiled.create_infer_request()
        self.name = name
        self.device = torch.device("cpu")

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        x = np.ascontiguousarray(x, dtype=np.float32)
        with keep_sigaltstack():
            self.request.infer({0: x})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)


@dataclass
class Int8Report:
    """What quantisation did: calibration inputs, the accuracy control's AP (AP points, 0..100) and the
    convolutions left in fp32 (`fp32_layers`, of `conv_layers`)."""

    calibration_inputs: int
    calibration_source: str
    flip_test: bool
    conv_layers: int
    fp32_layers: list[str] = field(default_factory=list)
    max_ap_drop: float | None = None
    held_out_people: int = 0
    fp32_ap: float | None = None
    int8_ap: float | None = None
    default_int8_ap: float | None = None  # plain quantisation (every layer int8), before accuracy control

    def summary(self) -> str:
        s = (f"int8 calibrated on {self.calibration_inputs} crops of {self.calibration_source}"
             f"{' (with their mirrors: flip test)' if self.flip_test else ''}; "
             f"{self.conv_layers - len(self.fp32_layers)} of {self.conv_layers} convolutions int8")  # fmt: skip
        if self.max_ap_drop is not None and self.fp32_ap is not None and self.int8_ap is not None:
            s += (f"; held-out AP ({self.held_out_people} people): fp32 {self.fp32_ap:.2f}, int8 {self.int8_ap:.2f} "
                  f"(drop {self.fp32_ap - self.int8_ap:.2f}, allowed {self.max_ap_drop:g})")
            if self.default_int8_ap is not None:
                s += f"; every layer int8 would give {self.default_int8_ap:.2f}"
        if self.fp32_layers:
            shown = ", ".join(self.fp32_layers[:8]) + (", ..." if len(self.fp32_layers) > 8 else "")
            s += f"; kept in fp32: {shown}"
        return s


def quantize_crops(model: nn.Module, input_size_wh: tuple[int, int], crops: np.ndarray, *, flip_test: bool = True,
                   threads: int | None = None, name: str = "openvino-int8") -> CompiledRunner:  # fmt: skip
    """`model` quantised by NNCF (default preset, every layer int8) on the normalised `crops` (N, 3, H, W) (and
    their mirrors with `flip_test`), compiled for the CPU: `hrpose bench`'s openvino-int8 row."""
    require_int8()
    import nncf

    fp32 = openvino_fp32_model(model, input_size_wh)
    inputs = calibration_inputs(np.asarray(crops, np.float32), flip_test)
    with _quiet_nncf(), keep_sigaltstack():
        q = nncf.quantize(fp32, nncf.Dataset(inputs), subset_size=len(inputs))
    return CompiledRunner(q, name=name, threads=threads)


@contextlib.contextmanager
def _quiet_nncf() -> Any:
    """NNCF's progress bars and INFO lines go to the log, not to the user's terminal."""
    nlog = logging.getLogger("nncf")
    old = nlog.level
    nlog.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nlog.setLevel(old)


# --------------------------------------------------------------------------------------------------------------
# the IR with hrpose's metadata
def save_ir(ov_model: Any, path: str | os.PathLike[str], meta: dict[str, Any], report: Int8Report | None) -> Path:
    """Write `ov_model` as `path` (.xml) + .bin with `meta` (hrpose checkpoint metadata, `checkpoint_meta`) and
    the quantisation report in its rt_info; written to temporary names and renamed into place."""
    import openvino as ov

    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise Int8Error(f"--out {path}: an OpenVINO IR is named .xml (its weights go beside it as .bin)")
    path.parent.mkdir(parents=True, exist_ok=True)
    ov_model.set_rt_info(json.dumps(meta), IR_META_KEY)
    if report is not None:
        ov_model.set_rt_info(json.dumps(asdict(report)), IR_INT8_KEY)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.xml")
    try:
        with keep_sigaltstack():
            ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    finally:
        for p in (tmp, tmp.with_suffix(".bin")):
            if p.exists():
                p.unlink()
    return path


def _rt(ov_model: Any, key: list[str]) -> str | None:
    try:
        if not ov_model.has_rt_info(key):
            return None
        value = ov_model.get_rt_info(key)
    except Exception:  # noqa: BLE001 - an rt_info of another shape is "not hrpose's"
        return None
    return str(value.astype(str) if hasattr(value, "astype") else value)


def read_ir(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """(openvino.Model, hrpose metadata, quantisation report or None) of an IR `save_ir` wrote; `Int8Error`
    for a file that is not one (missing, not an IR, no hrpose metadata)."""
    require_int8()
    import openvino as ov

    from hrpose.models.checkpoint_meta import _parse_meta

    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise Int8Error(f"{path}: an OpenVINO IR is an .xml file (with its .bin beside it)")
    if not path.is_file():
        raise Int8Error(f"{path}: not found; give the .xml `hrpose export --format openvino` wrote")
    if not path.with_suffix(".bin").is_file():
        raise Int8Error(f"{path}: its weights {path.with_suffix('.bin').name} are missing beside it")
    try:
        with keep_sigaltstack():
            m = ov.Core().read_model(str(path))
    except Exception as e:  # noqa: BLE001 - OpenVINO's parser errors are many-lined
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Int8Error(f"{path}: not a readable OpenVINO IR ({first[:200]})") from e
    raw = _rt(m, IR_META_KEY)
    if raw is None:
        raise Int8Error(f"{path}: carries no hrpose metadata (rt_info hrpose/meta); export it with "
                        "`hrpose export --format openvino`")  # fmt: skip
    meta = _parse_meta(raw, path)
    rep = _rt(m, IR_INT8_KEY)
    return m, meta, (json.loads(rep) if rep else None)


def check_ir_matches(path: str | os.PathLike[str], meta: dict[str, Any], cfg: Any) -> None:
    """`Int8Error` (one line) when the IR's stored model is not `cfg`'s: architecture, joints, input size."""
    from hrpose.models.weights import config_from_checkpoint_meta

    ir_cfg = config_from_checkpoint_meta(meta, str(path))
    ours = (str(cfg.MODEL.NAME), int(cfg.MODEL.NUM_JOINTS), [int(v) for v in cfg.MODEL.IMAGE_SIZE])
    theirs = (str(ir_cfg.MODEL.NAME), int(ir_cfg.MODEL.NUM_JOINTS), [int(v) for v in ir_cfg.MODEL.IMAGE_SIZE])
    if ours[1] != len(meta["joint_names"]):
        theirs = (theirs[0], len(meta["joint_names"]), theirs[2])
    if ours != theirs or _extra(cfg) != _extra(ir_cfg):
        raise Int8Error(
            f"{path}: an IR of another model ({theirs[0]}, {theirs[1]} joints, input {theirs[2][0]}x{theirs[2][1]}"
            f"{'' if _extra(cfg) == _extra(ir_cfg) else ', another MODEL.EXTRA'}) than the config's ({ours[0]}, "
            f"{ours[1]} joints, input {ours[2][0]}x{ours[2][1]}); export the IR from this model, or drop --cfg "
            "to run the IR with the config it carries"
        )


def _extra(cfg: Any) -> str:
    from hrpose.config import config_to_dict

    return json.dumps(config_to_dict(cfg.MODEL.get("EXTRA", {})) if hasattr(cfg.MODEL, "EXTRA") else {},
                      sort_keys=True, default=str)  # fmt: skip


class OpenVinoIRBackend:
    """An OpenVINO IR (`save_ir`: int8 from `hrpose export --format openvino`) on the CPU: crops -> heatmaps.

    `cfg`: refuse (`Int8Error`, one line) an IR made for another model; `meta`, `report`: the IR's hrpose
    metadata and quantisation report."""

    def __init__(self, path: str | os.PathLike[str], *, cfg: Any = None, threads: int | None = None,
                 name: str = "openvino-int8") -> None:  # fmt: skip
        m, self.meta, self.report = read_ir(path)
        if cfg is not None:
            check_ir_matches(path, self.meta, cfg)
        self.path = Path(path)
        self._runner = CompiledRunner(m, name=name, threads=threads)
        self.name, self.device = name, torch.device("cpu")

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        return self._runner(batch)


def ir_config(path: str | os.PathLike[str]) -> tuple[Any, Any, bool]:
    """(config, keypoint layout `DatasetMeta`, color_rgb) stored in an IR."""
    from hrpose.models.weights import config_from_checkpoint_meta, dataset_meta_from_checkpoint

    _, meta, _ = read_ir(path)
    cfg = config_from_checkpoint_meta(meta, str(path))
    rgb = bool(meta.get("color_rgb", cfg.DATASET.COLOR_RGB))
    return cfg, dataset_meta_from_checkpoint(meta, str(path)), rgb


class Int8Quantizer(Protocol):
    """What `BuildRequest.int8_quantizer` holds: quantises a torch model (fp32, eval, CPU) and returns the int8
    IR (.xml with hrpose's metadata, `save_ir`) it wrote (`hrpose.quantize.CalibrationFolder`: NNCF on a user's
    people, accuracy control, cached); the registry runs it as `OpenVinoIRBackend`."""

    def quantize(self, model: nn.Module) -> Path: ...
