"""CPU int8: NNCF post-training quantisation of the pose network to an OpenVINO IR, and the backend that runs it.

    model (torch, fp32) --export_onnx (self-checked)--> OpenVINO model --nncf.quantize--> int8 IR (.xml/.bin)

- Calibration crops are made exactly as `hrpose test` makes them (`hrpose.data.build_dataset` on the test
  side: GT boxes, no augmentation, the config's input size and channel order), plus their mirrors when the
  flip test is on (the int8 network sees both at test time). `calibration_set` reads them from a COCO-layout
  (or MPII) folder the user names.
- Accuracy control (`max_ap_drop`): `nncf.quantize_with_accuracy_control` with hrpose's own COCO AP (OKS NMS +
  COCOeval, `hrpose.evaluation.coco`) of the flip-tested, decoded keypoints on a held-out split of the same
  folder (every third image, never a calibration image) as the metric. NNCF puts back into fp32 the layers
  whose quantisation costs AP until the drop is at most `max_ap_drop` AP points; `Int8Report.fp32_layers`
  names the convolutions that run in fp32 in the result.
- The IR carries hrpose's metadata in its rt_info (`IR_META_KEY`: the same JSON as hrpose checkpoints'
  `hrpose_meta`: keypoint layout, sizes, channel order, the whole config; `IR_INT8_KEY`: the quantisation
  report), so `OpenVinoIRBackend` / `PoseEstimator.from_config(None, "model.xml", backend="openvino-int8")`
  need nothing else, and refuse an IR made for another model.
- `int8_from_model` quantises a checkpoint on first use and caches the IR under `$HRPOSE_HOME/int8`, keyed by
  the weights, the calibration folder's annotation file and the options.

The packages are the optional `int8` extra (nncf, openvino); without them every entry point raises
`BackendUnavailableError` naming the extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .runtime.openvino_backend import keep_sigaltstack
from .runtime.openvino_int8 import (  # noqa: F401 - re-exported: hrpose.quantize is the int8 API
    DEFAULT_CALIB_CROPS,
    DEFAULT_MAX_AP_DROP,
    GPU_REFUSAL,
    IR_INT8_KEY,
    IR_META_KEY,
    CompiledRunner,
    Int8Error,
    Int8Report,
    OpenVinoIRBackend,
    _quiet_nncf,
    calibration_inputs,
    check_ir_matches,
    conv_count,
    fp32_layers,
    ir_config,
    openvino_fp32_model,
    quantize_crops,
    read_ir,
    require_int8,
    save_ir,
)

logger = logging.getLogger(__name__)

# held-out people NNCF's accuracy control ranks the quantiser groups on (the drop itself is always measured on all)
RANKING_PEOPLE = 100

# --------------------------------------------------------------------------------------------------------------
# crops made as the test pipeline makes them
@dataclass
class PersonCrops:
    """Normalised crops (N, 3, H, W) of GT-boxed people with what decoding and COCO AP need."""

    crops: np.ndarray
    centers: np.ndarray  # (N, 2)
    scales: np.ndarray  # (N, 2)
    boxes: np.ndarray  # (N, 6) center, scale, area, score (the official all_boxes)
    image_ids: np.ndarray  # (N,)
    labeled: np.ndarray  # (N, K) bool: annotated joints
    joints: np.ndarray  # (N, K, 2) annotated joints in crop (input) pixels
    dataset: Any = None  # the PoseDataset they came from (evaluation settings, ground truth)

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, idx: Sequence[int] | np.ndarray) -> PersonCrops:
        i = np.asarray(idx, dtype=np.int64)
        return PersonCrops(self.crops[i], self.centers[i], self.scales[i], self.boxes[i], self.image_ids[i],
                           self.labeled[i], self.joints[i], self.dataset)  # fmt: skip


def test_side_dataset(cfg: Any, root: str | os.PathLike[str], image_set: str | None) -> Any:
    """`build_dataset(cfg, "test")` on `root`/`image_set` with GT boxes: the person records and the crops as
    `hrpose test` makes them. Bad input (no folder, no annotation file, no person, another joint count) raises
    one `UserError` line naming the file and the option."""
    from .config import ConfigError
    from .data import build_dataset

    root = Path(root)
    if not root.is_dir():
        raise Int8Error(f"--int8-calib {root}: not a folder; give a COCO-layout folder "
                        "(annotations/person_keypoints_<set>.json, images/<set>/) of your own people")  # fmt: skip
    image_set = image_set or default_calib_set(root)
    c = cfg.clone()
    c.defrost()
    c.DATASET.ROOT = str(root)
    c.DATASET.TEST_SET = str(image_set)
    c.TEST.USE_GT_BBOX = True
    c.freeze()
    try:
        return build_dataset(c, "test", False)
    except ConfigError as e:  # e.g. "MODEL.NUM_JOINTS is 17 but the coco dataset has 16 joints"
        raise Int8Error(f"--int8-calib {root} (set {image_set}): {e}") from e
    except UserError as e:
        msg = str(e)
        if "no usable person records" in msg:
            msg = (f"annotations/person_keypoints_{image_set}.json holds no annotated people to calibrate on; "
                   "give a set of your own images with person keypoint annotations")  # fmt: skip
        raise Int8Error(f"--int8-calib {root} (set {image_set}): {msg}") from e


def default_calib_set(root: str | os.PathLike[str]) -> str:
    """The set of `root` when its annotations folder holds one `person_keypoints_<set>.json` (else an error
    naming the choices and --calib-set)."""
    files = sorted((Path(root) / "annotations").glob("person_keypoints_*.json"))
    if len(files) == 1:
        return files[0].stem[len("person_keypoints_"):]
    names = ", ".join(f.stem[len("person_keypoints_"):] for f in files) or "none"
    raise Int8Error(f"--int8-calib {root}: annotations/person_keypoints_<set>.json sets found: {names}; name the "
                    "one to calibrate on with --calib-set SET")  # fmt: skip


def person_crops(dataset: Any, limit: int | None = None, indices: Sequence[int] | None = None) -> PersonCrops:
    """The first `limit` (or the `indices`) records of a test-side `PoseDataset` as `PersonCrops`."""
    n = len(dataset)
    idx = list(indices) if indices is not None else list(range(n if limit is None else min(n, int(limit))))
    if not idx:
        raise Int8Error(f"{_source(dataset)}: no person records to make crops from; give annotated people")
    all_boxes = dataset.boxes()
    crops, centers, scales, joints, labeled = [], [], [], [], []
    for i in idx:
        x, _, _, meta = dataset[i]
        crops.append(x.numpy())
        centers.append(meta["center"])
        scales.append(meta["scale"])
        joints.append(np.asarray(meta["joints"])[:, :2])
        labeled.append(np.asarray(meta["joints_vis"])[:, 0] > 0)
    ids = np.array([dataset.records[i].image_id for i in idx], dtype=np.int64)
    return PersonCrops(np.stack(crops).astype(np.float32), np.asarray(centers, np.float64),
                       np.asarray(scales, np.float64), all_boxes[idx], ids, np.asarray(labeled, bool),
                       np.asarray(joints, np.float32), dataset)  # fmt: skip


def _source(dataset: Any) -> str:
    spec = getattr(dataset, "eval_spec", None)
    return str(getattr(spec, "ground_truth", None) or getattr(spec, "image_set", "the calibration set"))


def split_held_out(dataset: Any, every: int = 3) -> tuple[list[int], list[int]]:
    """Record indices (calibration, held out): the people of every `every`-th image (by sorted image id) are
    held out for accuracy control, the others calibrate; no image is in both."""
    ids = sorted({int(r.image_id) for r in dataset.records})
    held = {i for k, i in enumerate(ids) if k % every == every - 1}
    calib = [k for k, r in enumerate(dataset.records) if int(r.image_id) not in held]
    val = [k for k, r in enumerate(dataset.records) if int(r.image_id) in held]
    return calib, val


# --------------------------------------------------------------------------------------------------------------
# quantisation with accuracy control
def coco_ap(people: PersonCrops, keypoints: np.ndarray) -> float:
    """hrpose's COCO AP (0..1: OKS NMS, rescoring, COCOeval over the images of `people`) of `keypoints`
    (N, K, 3) predicted for `people`, against the ground truth of their dataset."""
    from pycocotools.cocoeval import COCOeval

    from .evaluation.coco import _person_category, build_results, load_coco, resolve_sigmas, select_poses

    ds = people.dataset
    spec = ds.eval_spec
    if spec is None or spec.kind != "coco" or spec.ground_truth is None:
        raise Int8Error(f"{_source(ds)}: accuracy control measures COCO AP and needs a COCO-layout set with "
                        "keypoint annotations; drop --max-ap-drop or give a COCO-layout --int8-calib")  # fmt: skip
    gt = _gt_cache.get(str(spec.ground_truth))
    if gt is None:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = load_coco(spec.ground_truth)
        _gt_cache.clear()
        _gt_cache[str(spec.ground_truth)] = gt
    sigmas = ds.meta.sigmas or None
    preds = np.asarray(keypoints, np.float64)
    sel, scores = select_poses(preds, people.boxes, people.image_ids, in_vis_thre=spec.in_vis_thre,
                               oks_thre=spec.oks_thre, soft_nms=spec.soft_nms, sigmas=sigmas)  # fmt: skip
    cat = _person_category(gt) if spec.category_id is None else spec.category_id
    results = build_results(preds, people.image_ids, scores, sel, cat)
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(r) for r in results])
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = resolve_sigmas(sigmas, preds.shape[1])
        ev.params.imgIds = sorted({int(i) for i in people.image_ids})
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(0.0, float(ev.stats[0]))


_gt_cache: dict[str, Any] = {}


def predict_people(backend: Callable[[np.ndarray], np.ndarray], people: PersonCrops, settings: Any,
                   batch: int = 8) -> np.ndarray:  # fmt: skip
    """Keypoints (N, K, 3) in image pixels through the test pipeline (flip test per `settings`, decode)."""
    from .pipeline import decode, flip_heatmaps

    ds = people.dataset
    out = []
    for i in range(0, len(people), batch):
        sl = slice(i, i + batch)
        hm = flip_heatmaps(backend, people.crops[sl], ds.meta.flip_pairs, settings)
        out.append(decode(ds.codec, hm, people.centers[sl], people.scales[sl], settings))
    return np.concatenate(out)


def quantize_openvino(
    model: nn.Module,
    cfg: Any,
    calib: PersonCrops,
    *,
    flip_test: bool | None = None,
    held_out: PersonCrops | None = None,
    max_ap_drop: float | None = None,
    source: str = "",
    fast_bias_correction: bool = True,
    ignored_types: Sequence[str] = (),
) -> tuple[Any, Int8Report]:
    """`model` (fp32, eval) -> (int8 `openvino.Model`, `Int8Report`).

    calib: the calibration people (their crops, and mirrors with the flip test: TEST.FLIP_TEST unless
    `flip_test` says); with `max_ap_drop` (AP points) and `held_out`, accuracy control keeps in fp32 the
    layers that cost more than that on the held-out people's COCO AP. `ignored_types`: OpenVINO op types
    NNCF leaves unquantised (tests)."""
    require_int8()
    import nncf

    from .pipeline import TestSettings

    settings = TestSettings.from_config(cfg, flip_test=flip_test)
    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    if calib.crops.shape[2:] != (size[1], size[0]):
        raise Int8Error(f"calibration crops are {calib.crops.shape[3]}x{calib.crops.shape[2]}, the model takes "
                        f"{size[0]}x{size[1]} (MODEL.IMAGE_SIZE)")  # fmt: skip
    inputs = calibration_inputs(calib.crops, settings.flip_test)
    fp32 = openvino_fp32_model(model, size)
    calib_ds = nncf.Dataset(inputs)
    scope = nncf.IgnoredScope(types=list(ignored_types)) if ignored_types else None
    report = Int8Report(len(inputs), source or _source(calib.dataset), settings.flip_test, conv_count(fp32))
    with _quiet_nncf(), keep_sigaltstack():
        if max_ap_drop is None:
            q = nncf.quantize(fp32, calib_ds, subset_size=len(inputs), fast_bias_correction=fast_bias_correction,
                              ignored_scope=scope)  # fmt: skip
        else:
            if held_out is None or not len(held_out):
                raise Int8Error("accuracy control (--max-ap-drop) needs held-out people: the calibration set has "
                                "too few images (it holds out every third one); give more annotated images")
            if max_ap_drop < 0:
                raise Int8Error(f"--max-ap-drop {max_ap_drop:g}: expected AP points >= 0 (default 0.5)")
            people = held_out

            def validate(compiled: Any, items: Iterable[int]) -> float:
                idx = [int(i) for i in items]
                sub = people.subset(idx) if len(idx) != len(people) else people
                runner = CompiledRunner(compiled)
                return 100.0 * coco_ap(sub, predict_people(runner, sub, settings))

            from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

            val_ds = nncf.Dataset(list(range(len(people))), lambda i: people.crops[i : i + 1])
            # NNCF ranks every group of quantisers by the AP of a subset of the held-out people with that group
            # in fp32 (one validation per group, again after each step that made the drop worse): its default
            # subset of 300 people made this take tens of minutes on a 2-core CPU
            ranking = AdvancedAccuracyRestorerParameters(ranking_subset_size=min(len(people), RANKING_PEOPLE))
            q = nncf.quantize_with_accuracy_control(
                fp32, calib_ds, val_ds, validate, max_drop=float(max_ap_drop), drop_type=nncf.DropType.ABSOLUTE,
                subset_size=len(inputs), fast_bias_correction=fast_bias_correction, ignored_scope=scope,
                advanced_accuracy_restorer_parameters=ranking,
            )  # fmt: skip
            report.max_ap_drop = float(max_ap_drop)
            report.held_out_people = len(people)
            report.fp32_ap = validate(fp32, range(len(people)))
            report.int8_ap = validate(q, range(len(people)))
    report.fp32_layers = fp32_layers(q)
    return q, report


# --------------------------------------------------------------------------------------------------------------
# the product's entry points
def calibration_set(cfg: Any, root: str | os.PathLike[str], image_set: str | None, *,
                    max_crops: int = DEFAULT_CALIB_CROPS,
                    accuracy_control: bool = False) -> tuple[PersonCrops, PersonCrops | None]:  # fmt: skip
    """(calibration people, held-out people or None) from `root`/`image_set`, crops as `hrpose test` makes them;
    with `accuracy_control` every third image is held out (see `split_held_out`)."""
    if max_crops < 1:
        raise Int8Error(f"--calib-crops must be >= 1 (person crops for int8 calibration), got {max_crops}")
    ds = test_side_dataset(cfg, root, image_set)
    if not accuracy_control:
        return person_crops(ds, max_crops), None
    calib_idx, val_idx = split_held_out(ds)
    if not calib_idx or not val_idx:
        raise Int8Error(f"--int8-calib {root} (set {image_set}): {len(ds.records)} people in too few images to hold "
                        "some out for accuracy control (it holds out every third image); give at least 3 "
                        "annotated images, or drop --max-ap-drop")  # fmt: skip
    return person_crops(ds, indices=calib_idx[:max_crops]), person_crops(ds, indices=val_idx)


def export_int8_ir(
    model: nn.Module,
    cfg: Any,
    out: str | os.PathLike[str],
    calib_root: str | os.PathLike[str],
    calib_set: str | None,
    *,
    dataset_meta: Any = None,
    max_crops: int = DEFAULT_CALIB_CROPS,
    max_ap_drop: float | None = DEFAULT_MAX_AP_DROP,
    flip_test: bool | None = None,
    color_rgb: bool | None = None,
) -> tuple[Path, Int8Report]:
    """The Python side of `hrpose export --format openvino --int8-calib ROOT`: quantise `model` (loaded, eval)
    on people of `calib_root`/`calib_set` and write the int8 IR `out` with hrpose's metadata."""
    require_int8()
    from .data.layout import layout_from_config
    from .models.weights import checkpoint_meta

    if Path(calib_root).is_dir():
        calib_set = calib_set or default_calib_set(calib_root)
    calib, held = calibration_set(cfg, calib_root, calib_set, max_crops=max_crops,
                                  accuracy_control=max_ap_drop is not None)  # fmt: skip
    q, report = quantize_openvino(model.eval().to("cpu"), cfg, calib, flip_test=flip_test, held_out=held,
                                  max_ap_drop=max_ap_drop, source=f"{calib_root} ({calib_set})")  # fmt: skip
    meta = checkpoint_meta(cfg, dataset_meta if dataset_meta is not None else layout_from_config(cfg))
    if color_rgb is not None:
        meta["color_rgb"] = bool(color_rgb)
    return save_ir(q, out, meta, report), report


def int8_cache_dir() -> Path:
    """``$HRPOSE_HOME/int8``: IRs quantised on first use (`int8_from_model`)."""
    from .zoo import hrpose_home

    return hrpose_home() / "int8"


def int8_from_model(model: nn.Module, cfg: Any, calib_root: str | os.PathLike[str] | None, calib_set: str | None, *,
                    dataset_meta: Any = None, color_rgb: bool | None = None,
                    max_ap_drop: float | None = DEFAULT_MAX_AP_DROP, max_crops: int = DEFAULT_CALIB_CROPS,
                    flip_test: bool | None = None, log: Callable[[str], None] = logger.warning) -> Path:  # fmt: skip
    """The int8 IR (.xml) of `model`, quantised on first use from people of `calib_root`/`calib_set` (cached
    under `int8_cache_dir()`, keyed by the weights, the annotation file's bytes and the options). The registry
    entry "openvino-int8" runs it (`CalibrationFolder`); nothing here builds a backend."""
    require_int8()
    if calib_root is None:
        raise Int8Error("--precision int8 quantises the model on first use from your own people: give "
                        "--int8-calib DATASET_ROOT (COCO layout) [--calib-set S], or --weights model.xml from "
                        "`hrpose export --format openvino --int8-calib ...`")  # fmt: skip
    from .runtime.onnx_cache import model_key

    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    ds = test_side_dataset(cfg, calib_root, calib_set)  # bad input: one error line before any work
    calib_set = str(ds.eval_spec.image_set) if ds.eval_spec is not None else calib_set
    h = hashlib.sha256(model_key(model, size).encode())
    gt = ds.eval_spec.ground_truth if ds.eval_spec is not None else None
    if gt is not None and Path(gt).is_file():
        h.update(Path(gt).read_bytes())
    h.update(json.dumps([str(Path(calib_root).resolve()), calib_set, max_ap_drop, max_crops, flip_test,
                         _versions()]).encode())  # fmt: skip
    path = int8_cache_dir() / f"{type(model).__name__}-{size[0]}x{size[1]}-{h.hexdigest()[:32]}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file():
        try:
            check_ir_matches(path, read_ir(path)[1], cfg)
            return path
        except UserError as e:
            log(f"int8 cache entry {path} unusable ({e}); quantising again")
    log(f"int8: quantising the model on {calib_root} ({calib_set}) once; cached as {path}")
    _, report = export_int8_ir(model, cfg, path, calib_root, calib_set, dataset_meta=dataset_meta,
                               max_crops=max_crops, max_ap_drop=max_ap_drop, flip_test=flip_test,
                               color_rgb=color_rgb)  # fmt: skip
    log(report.summary())
    return path


def _versions() -> str:
    import nncf
    import openvino

    return f"nncf {nncf.__version__}; openvino {openvino.__version__}; torch {torch.__version__}"


@dataclass(frozen=True)
class CalibrationFolder:
    """`int8_from_model`'s options, for the registry: `make_backend("openvino-int8", model, "cpu",
    int8_quantizer=CalibrationFolder(cfg, root, ...))` quantises `model` on first use from the people of `root`
    (`calib_set`; accuracy control with `max_ap_drop` AP points, None: none) and caches the IR, which the
    registry then runs."""

    cfg: Any
    root: str | os.PathLike[str] | None
    calib_set: str | None = None
    dataset_meta: Any = None
    color_rgb: bool | None = None
    max_ap_drop: float | None = DEFAULT_MAX_AP_DROP
    max_crops: int = DEFAULT_CALIB_CROPS
    flip_test: bool | None = None

    def quantize(self, model: nn.Module) -> Path:
        return int8_from_model(model, self.cfg, self.root, self.calib_set, dataset_meta=self.dataset_meta,
                               color_rgb=self.color_rgb, max_ap_drop=self.max_ap_drop, max_crops=self.max_crops,
                               flip_test=self.flip_test)  # fmt: skip
