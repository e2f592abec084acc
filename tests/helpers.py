"""Plain helpers (functions, constants, classes) shared by several test modules; fixtures are in conftest.py.

Test modules import from here (`from helpers import ...`), never from one another.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml
from torch import nn

from conftest import GOLDEN, ROOT, mini_coco

# ---------------------------------------------------------------------------------------------------------
# models and configs

W32 = ROOT / "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"
# The w32 topology (4 stages, all branches and fuse layers) with one module per stage and narrow branches:
# every op type of the full model goes through export, at a fraction of the graph size.
REDUCED = [
    "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
    "MODEL.EXTRA.STAGE2.NUM_CHANNELS", "[8, 16]",
    "MODEL.EXTRA.STAGE3.NUM_MODULES", "1", "MODEL.EXTRA.STAGE3.NUM_CHANNELS", "[8, 16, 32]",
    "MODEL.EXTRA.STAGE4.NUM_MODULES", "1", "MODEL.EXTRA.STAGE4.NUM_CHANNELS", "[8, 16, 32, 64]",
]  # fmt: skip


def fill_module():
    """The golden `fill.py` (deterministic weights: `fill_module().fill_(model, seed)`), loaded from ../shared."""
    spec = importlib.util.spec_from_file_location("golden_fill", GOLDEN / "fill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A tiny pose_resnet (the inference tests' model): fed RGB like the zoo's models.
def backend_variants() -> Any:
    """benchmarks/backend_variants.py (loaded once): the exploratory torch backends that are not product names
    (`VARIANTS`, `make_variant(name, model)`, `factories()`, `main(argv)`)."""
    return benchmark_script("backend_variants")


def benchmark_script(stem: str) -> Any:
    """benchmarks/<stem>.py loaded once as a module (the lab's scripts are files, not a package)."""
    name = f"hrpose_benchmarks_{stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{stem}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


TINY_YAML = """
DATASET: {DATASET: coco, COLOR_RGB: true}
MODEL:
  NAME: pose_resnet
  NUM_JOINTS: 17
  IMAGE_SIZE: [32, 64]
  HEATMAP_SIZE: [8, 16]
  SIGMA: 2
  EXTRA:
    NUM_LAYERS: 18
    DECONV_WITH_BIAS: false
    NUM_DECONV_LAYERS: 3
    NUM_DECONV_FILTERS: [32, 32, 32]
    NUM_DECONV_KERNELS: [4, 4, 4]
    FINAL_CONV_KERNEL: 1
TEST: {FLIP_TEST: true, POST_PROCESS: true, SHIFT_HEATMAP: true, IN_VIS_THRE: 0.2}
"""
# the tiny model, fed BGR by its YAML: the zoo entry's channel order (RGB, MMPose) must win
TINY_BGR_YAML = TINY_YAML.replace("COLOR_RGB: true", "COLOR_RGB: false")


def tiny_hrnet(num_joints: int = 17, final_conv_kernel: int = 1):
    """A two-stage pose_hrnet with narrow branches (8, 16, 32), built from its spec (no config)."""
    from hrpose.models.hrnet import HRNetSpec, PoseHighResolutionNet, StageSpec

    stages = (
        StageSpec(1, 2, "BASIC", (1, 1), (8, 16)),
        StageSpec(1, 3, "BASIC", (1, 1, 1), (8, 16, 32)),
    )
    return PoseHighResolutionNet(HRNetSpec(stages, num_joints, final_conv_kernel))


# ---------------------------------------------------------------------------------------------------------
# tiny training runs on coco-mini images (engine, checkpoint and robustness tests)


def tiny_hrnet_extra(width: int) -> dict[str, Any]:
    """MODEL.EXTRA of a pose_hrnet with one module per stage and one block per branch, branch widths
    width x (1, 2, 4, 8)."""
    stage = {"NUM_MODULES": 1, "BLOCK": "BASIC", "FUSE_METHOD": "SUM"}
    return {
        "FINAL_CONV_KERNEL": 1, "PRETRAINED_LAYERS": ["*"],
        **{f"STAGE{s}": {**stage, "NUM_BRANCHES": s, "NUM_BLOCKS": [1] * s,
                         "NUM_CHANNELS": [width * 2**b for b in range(s)]} for s in (2, 3, 4)},
    }  # fmt: skip


def tiny_train_cfg(root: Path, model: dict[str, Any], *, output_dir: str | Path = "output", log_dir: str | Path = "log",
                   dataset: dict[str, Any] | None = None, train: dict[str, Any] | None = None,
                   test: dict[str, Any] | None = None, hrpose: dict[str, Any] | None = None,
                   **top: Any) -> dict[str, Any]:  # fmt: skip
    """A training config dict on coco-mini-layout `root` (train2017 for both splits), 64x64 crops, adam,
    no workers, TensorBoard off, seed 0; `model`, `dataset`, `train`, `test`, `hrpose` add to (or override)
    their sections, `top` to the top level."""
    return {
        "OUTPUT_DIR": str(output_dir), "LOG_DIR": str(log_dir), "WORKERS": 0, "PRINT_FREQ": 1,
        "PIN_MEMORY": False, "AUTO_RESUME": True, **top,
        "DATASET": {"DATASET": "coco", "ROOT": str(root), "TRAIN_SET": "train2017", "TEST_SET": "train2017",
                    **(dataset or {})},
        "MODEL": {"PRETRAINED": "", "IMAGE_SIZE": [64, 64], "HEATMAP_SIZE": [16, 16], "SIGMA": 2,
                  "NUM_JOINTS": 17, **model},
        "TRAIN": {"BATCH_SIZE_PER_GPU": 4, "BEGIN_EPOCH": 0, "OPTIMIZER": "adam", "LR": 1e-3, "SHUFFLE": True,
                  **(train or {})},
        "TEST": dict(test or {}),
        "HRPOSE": {"TENSORBOARD": False, "SEED": 0, **(hrpose or {})},
    }  # fmt: skip


def tiny_hrnet_cfg_dict(root: Path, **train: Any) -> dict[str, Any]:
    """A tiny pose_hrnet (1.1M parameters) at 64x64 on `root`, 2 iterations per epoch, deterministic."""
    return tiny_train_cfg(
        root, {"NAME": "pose_hrnet", "EXTRA": tiny_hrnet_extra(16)}, GPUS="(0,)",
        LOSS={"USE_TARGET_WEIGHT": True},
        dataset={"FLIP": True, "ROT_FACTOR": 40, "SCALE_FACTOR": 0.3},
        train={"END_EPOCH": 2, "LR_STEP": [1], "LR_FACTOR": 0.1, **train},
        test={"BATCH_SIZE_PER_GPU": 8, "FLIP_TEST": True, "POST_PROCESS": True, "SHIFT_HEATMAP": True,
              "USE_GT_BBOX": True, "IN_VIS_THRE": 0.2, "OKS_THRE": 0.9},
        hrpose={"MAX_ITERS_PER_EPOCH": 2, "DETERMINISTIC": True},
    )  # fmt: skip


def tiny_hrnet_config(tmp: Path, root: Path, name: str = "run", *, lr: float = 1e-3, lr_step: list[int] | None = None,
                      **train_keys: Any) -> Path:  # fmt: skip
    """tmp/<name>.yaml: a tinier pose_hrnet (widths 8..64) at 64x64 on `root`, one iteration per epoch,
    validation on the same images, outputs under tmp/output."""
    cfg = tiny_train_cfg(
        root, {"NAME": "pose_hrnet", "EXTRA": tiny_hrnet_extra(8)}, output_dir=tmp / "output", log_dir=tmp / "log",
        train={"END_EPOCH": 1, "LR": lr, "LR_STEP": [2] if lr_step is None else lr_step, "LR_FACTOR": 0.1,
               **train_keys},
        test={"BATCH_SIZE_PER_GPU": 16, "FLIP_TEST": False, "USE_GT_BBOX": True},
        hrpose={"MAX_ITERS_PER_EPOCH": 1},
    )  # fmt: skip
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def hrnet_exp_dir(cfg_file: Path) -> Path:
    """The experiment folder `tiny_hrnet_config` gives its runs."""
    return cfg_file.parent / "output" / "coco" / "pose_hrnet" / cfg_file.stem


#: END_EPOCH of `tiny_resnet_config`
TINY_RESNET_END_EPOCH = 3


def tiny_resnet_config(tmp_path: Path, n_images: int = 3) -> Path:
    """coco-mini's first `n_images` images with keypoints + a pose_resnet-18 at 64x64, 1 iteration/epoch."""
    root = mini_coco(tmp_path, n_images)
    extra = {"FINAL_CONV_KERNEL": 1, "DECONV_WITH_BIAS": False, "NUM_DECONV_LAYERS": 3,
             "NUM_DECONV_FILTERS": [16, 16, 16], "NUM_DECONV_KERNELS": [4, 4, 4], "NUM_LAYERS": 18}  # fmt: skip
    cfg = tiny_train_cfg(
        root, {"NAME": "pose_resnet", "EXTRA": extra}, output_dir=tmp_path / "output", log_dir=tmp_path / "log",
        train={"END_EPOCH": TINY_RESNET_END_EPOCH, "LR_STEP": [2]},
        test={"BATCH_SIZE_PER_GPU": 16, "FLIP_TEST": False, "USE_GT_BBOX": True},
        hrpose={"MAX_ITERS_PER_EPOCH": 2},
    )  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def resnet_exp_dir(cfg_file: Path) -> Path:
    """The experiment folder `tiny_resnet_config` gives its run."""
    return cfg_file.parent / "output" / "coco" / "pose_resnet" / "run"


# `python driver.py ARGS` = `hrpose ARGS`, able to hang at an exact moment of training (env RB_HANG) so that the
# parent can SIGKILL it there; validation runs for real, its score replaced by RB_PERF per epoch.
DRIVER = r"""
import functools, os, pathlib, sys, time

import hrpose.engine
from hrpose.engine.evaluate import validate as real_validate
from hrpose.engine.train import train_one_epoch as real_epoch

PERF = [float(p) for p in os.environ["RB_PERF"].split(",")]
marker = pathlib.Path(os.environ["RB_MARKER"])
hang = os.environ.get("RB_HANG", "")


def validate(*args, step=0, **kwargs):
    name_values, _ = real_validate(*args, step=step, **kwargs)
    return name_values, PERF[step]


injected = {"validate": validate}  # passed to hrpose.engine.train(...) by keyword, see the end


def stop_here(what):
    marker.write_text(what)
    time.sleep(600)  # the parent sends SIGKILL


if hang.startswith("step:"):  # after the first optimizer step of epoch N
    epoch_to_hang = int(hang.split(":")[1])

    def train_one_epoch(model, loader, *args, epoch, **kwargs):
        if epoch == epoch_to_hang:
            def one_then_hang(loader=loader):
                for i, batch in enumerate(loader):
                    if i == 1:
                        stop_here(f"epoch {epoch} after one step")
                    yield batch
            return real_epoch(model, one_then_hang(), *args, epoch=epoch, **kwargs)
        return real_epoch(model, loader, *args, epoch=epoch, **kwargs)

    injected["train_one_epoch"] = train_one_epoch
elif hang.startswith("write:"):  # inside the atomic writer: temp file complete, destination not yet replaced
    _, name, nth = hang.split(":")
    real_replace = os.replace
    seen = [0]

    def replace(src, dst, *args, **kwargs):
        if pathlib.Path(dst).name == name:
            seen[0] += 1
            if seen[0] == int(nth):
                assert pathlib.Path(src).stat().st_size > 0
                stop_here(f"temp file {src} written for {dst}")
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace

# `hrpose train` calls hrpose.engine.train(cfg, cfg_file): give it the fakes as its keyword arguments
hrpose.engine.train = functools.partial(hrpose.engine.train, **injected)

from hrpose.cli import main

sys.exit(main(sys.argv[1:]))
"""


# ---------------------------------------------------------------------------------------------------------
# networking


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (bound, read and released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------------------
# images and datasets


def jpeg_with_orientation(image_bgr: np.ndarray, orientation: int) -> bytes:
    """A JPEG of `image_bgr` (stored pixels) carrying an EXIF Orientation tag (APP1 after SOI)."""
    ok, enc = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    data = enc.tobytes()
    # TIFF header (big endian), IFD0 at offset 8 with one entry: tag 0x0112 SHORT count 1 value orientation
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + app1 + data[2:]


#: images and joints of `write_custom_dataset`
CUSTOM_N_IMAGES = 6
CUSTOM_K = 5


def random_jpeg(rng: np.random.Generator) -> bytes:
    """An 80x60 JPEG of random pixels."""
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def write_custom_dataset(root: Path) -> Path:
    """ROOT/annotations/val.json + ROOT/images/val/img_<i>.jpg, one 5-joint person per image."""
    rng = np.random.default_rng(0)
    img_dir = root / "images" / "val"
    img_dir.mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i in range(CUSTOM_N_IMAGES):
        name = f"img_{i}.jpg"
        (img_dir / name).write_bytes(random_jpeg(rng))
        images.append({"id": 100 + i, "file_name": name, "width": 80, "height": 60})
        kp = np.concatenate([rng.uniform(20, 60, (CUSTOM_K, 2)), np.full((CUSTOM_K, 1), 2)], 1).ravel().tolist()
        anns.append({"id": i, "image_id": 100 + i, "bbox": [10, 10, 60, 40], "area": 2400, "category_id": 3,
                     "iscrowd": 0, "keypoints": kp})  # fmt: skip
    cat = {"id": 3, "name": "thing", "keypoints": ["top", "left_a", "right_a", "left_b", "right_b"]}
    (root / "annotations" / "val.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                               "categories": [cat]}))  # fmt: skip
    return img_dir


def custom_dataset_cfg(root: Path, skip: bool = True):
    """The config of `write_custom_dataset(root)`: custom dataset, val for both splits, 48x64 crops, GT boxes."""
    from hrpose.config import get_default_config, merge_dict

    cfg = get_default_config()
    merge_dict(cfg, {"DATASET": {"DATASET": "custom", "ROOT": str(root), "TEST_SET": "val", "TRAIN_SET": "val"},
                     "MODEL": {"NUM_JOINTS": CUSTOM_K, "IMAGE_SIZE": [48, 64], "HEATMAP_SIZE": [12, 16]},
                     "TEST": {"USE_GT_BBOX": True}, "HRPOSE": {"SKIP_BAD_IMAGES": skip, "SEED": 0}})  # fmt: skip
    return cfg


# ---------------------------------------------------------------------------------------------------------
# ONNX graphs (detectors)


def const_onnx_model(path, outputs: dict[str, np.ndarray], input_hw=(640, 640)) -> None:
    """A graph with an image input that it ignores, returning constant tensors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *input_hw])
    nodes, outs = [], []
    for name, value in outputs.items():
        tensor = numpy_helper.from_array(value, name=f"{name}_value")
        nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        elem = TensorProto.INT64 if value.dtype == np.int64 else TensorProto.FLOAT
        outs.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
    graph = helper.make_graph(nodes, "dets", [inp], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def onnx_const_node(name: str, value):
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name + "_v"))


def end2end_graph(path, *, static: bool = False) -> None:
    """An MMDeploy-end2end-like graph: input (1, 3, H, W), outputs dets (1, 4, 5) and labels (1, 4).

    Row 0: a fixed box whose score is input[0, 2, 0, 0] / 255 (channel 2 = red in BGR, top-left pixel);
    row 1: a box whose score is input[0, 0, H-1, W-1] / 255 (bottom-right: padding when the image is wide);
    row 2: a box overlapping row 0 with score 0.5 (the graph's NMS kept it: no second NMS may drop it);
    row 3: a confident non-person (label 1).
    """
    import onnx
    from onnx import TensorProto, helper

    dims = [1, 3, 416, 416] if static else [1, 3, "height", "width"]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)
    big = np.iinfo(np.int64).max
    nodes = [
        onnx_const_node("s0", np.array([0, 2, 0, 0], np.int64)),
        onnx_const_node("e0", np.array([1, 3, 1, 1], np.int64)),
        onnx_const_node("s1", np.array([0, 0, -1, -1], np.int64)),
        onnx_const_node("e1", np.array([1, 1, big, big], np.int64)),
        helper.make_node("Slice", ["input", "s0", "e0"], ["p0"]),
        helper.make_node("Slice", ["input", "s1", "e1"], ["p1"]),
        onnx_const_node("shape11", np.array([1, 1], np.int64)), onnx_const_node("k255", np.array(255.0, np.float32)),
        helper.make_node("Reshape", ["p0", "shape11"], ["q0"]), helper.make_node("Reshape", ["p1", "shape11"], ["q1"]),
        helper.make_node("Div", ["q0", "k255"], ["score0"]), helper.make_node("Div", ["q1", "k255"], ["score1"]),
        onnx_const_node("box0", np.array([[20.8, 41.6, 104.0, 166.4]], np.float32)),
        onnx_const_node("box1", np.array([[208.0, 0.0, 520.0, 208.0]], np.float32)),
        helper.make_node("Concat", ["box0", "score0"], ["row0"], axis=1),
        helper.make_node("Concat", ["box1", "score1"], ["row1"], axis=1),
        onnx_const_node("row2", np.array([[31.2, 41.6, 104.0, 166.4, 0.5]], np.float32)),
        onnx_const_node("row3", np.array([[0.0, 0.0, 100.0, 100.0, 0.99]], np.float32)),
        helper.make_node("Concat", ["row0", "row1", "row2", "row3"], ["rows"], axis=0),
        onnx_const_node("shape145", np.array([1, 4, 5], np.int64)),
        helper.make_node("Reshape", ["rows", "shape145"], ["dets"]),
        onnx_const_node("labels", np.array([[0, 0, 0, 1]], np.int64)),
    ]  # fmt: skip
    outs = [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, 4, 5]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 4])]  # fmt: skip
    model = helper.make_model(helper.make_graph(nodes, "end2end", [inp], outs),
                              opset_imports=[helper.make_opsetid("", 13)])  # fmt: skip
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


# ---------------------------------------------------------------------------------------------------------
# `hrpose serve` over HTTP

HOST = "127.0.0.1"


class Server:
    """`hrpose serve ...` in a subprocess on a free port of 127.0.0.1; stopped by `stop()`."""

    def __init__(self, model_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port(HOST)
        self.log = model_dir / f"serve-{self.port}.log"
        cmd = [sys.executable, "-m", "hrpose.cli", "serve", "--cfg", str(model_dir / "tiny.yaml"),
               "--weights", str(model_dir / "tiny.safetensors"), "--detector", "whole", "--device", "cpu",
               "--port", str(self.port), *extra]  # fmt: skip
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hrpose serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if request(self, "GET", "/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"hrpose serve did not come up in 90 s:\n{self.log.read_text()}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log_file.close()


def request(server: Server, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 30) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection(HOST, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def multipart(fields: dict[str, tuple[str | None, bytes]]) -> tuple[bytes, str]:
    boundary = "hrposetestboundary7d3"
    out = b""
    for name, (filename, data) in fields.items():
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class TinyPose(nn.Module):
    """(B, 3, 32, 32) -> (B, 4, 8, 8); no BatchNorm, so results do not depend on batch statistics."""

    def __init__(self, k: int = 4) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.b = nn.Conv2d(8, k, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def tiny_batches(n: int, b: int = 2, k: int = 4, seed: int = 0) -> list:
    """`n` seeded random (input, target, target_weight, meta) batches for `TinyPose`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(b, 3, 32, 32, generator=g)
        t = torch.rand(b, k, 8, 8, generator=g)
        w = torch.ones(b, k, 1)
        out.append((x, t, w, {}))
    return out


# ---------------------------------------------------------------------------------------------------------
# The runtime's registry, recorded: which entries a command builds and runs


class RecordedBackend:
    """A registry backend that appends "ran <name>" to `log` at each call (attributes: the real backend's)."""

    def __init__(self, backend: Any, entry_name: str, log: Path) -> None:
        self._backend, self._entry_name, self._log = backend, entry_name, Path(log)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._backend, attr)

    def __call__(self, batch: Any) -> Any:
        with self._log.open("a", encoding="utf-8") as f:
            f.write(f"ran {self._entry_name}\n")
        return self._backend(batch)


def recorded_registry(log: Path) -> dict[str, Any]:
    """`hrpose.runtime.REGISTRY` with every entry swapped for one that appends "built <name>" to `log` when built
    and returns a `RecordedBackend`: what a test puts in place of the registry to see what a command runs."""
    from hrpose.runtime import REGISTRY, Entry

    def swap(name: str, entry: Any) -> Any:
        def build(req: Any) -> Any:
            backend = entry.build(req)
            with Path(log).open("a", encoding="utf-8") as f:
                f.write(f"built {name}\n")
            return RecordedBackend(backend, name, log)

        return Entry(build, entry.precision, entry.summary)

    return {name: swap(name, entry) for name, entry in REGISTRY.items()}
