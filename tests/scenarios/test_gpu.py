"""GPU-only checks (marker `gpu`): CUDA graphs, fp16/bf16 backends, AMP training, the estimator on CUDA.

They need a CUDA device, so the CPU suite deselects them (`-m "not slow and not gpu"`); run them on a GPU
machine with `bash scripts/test.sh gpu` (they fail there, loudly, if CUDA is missing). The CPU-side
contract of the same options (clear errors without a GPU) is tested in `test_export.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DATA, ROOT, mini_coco
from helpers import backend_variants
from hrpose.bench import GPU_DEFAULT_BACKENDS, keypoints_input_px, real_crops, run_bench
from hrpose.config import load_config
from hrpose.models import build_model
from hrpose.runtime import make_backend
from hrpose.runtime.torch_backend import TorchBackend

pytestmark = pytest.mark.gpu

W32 = ROOT / "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"
SIZE = (192, 256)


@pytest.fixture(scope="module")
def cuda() -> torch.device:
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device"
    return torch.device("cuda")


@pytest.fixture(scope="module")
def w32(cuda):
    torch.manual_seed(0)
    return build_model(load_config(W32)).eval().to(cuda)


@pytest.fixture(scope="module")
def crops():
    root = DATA / "coco-mini"
    return real_crops(root / "images/train2017", root / "annotations/person_keypoints_train2017.json", SIZE, 12)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def test_fp32_graph_replays_the_eager_model(w32, crops):
    """CUDA-graph replay of the folded fp32 model equals eager fp32 (TF32 convs aside) at every batch size,
    including sizes that are padded up to the captured power of two."""
    eager = make_backend("torch", w32, fold_bn=False)
    graph = make_backend("torch-fast", w32)  # on a GPU: CUDA-graph replay
    for n in (1, 3, 8, 5, 1):  # 3 -> graph of 4, 5 -> graph of 8: padding must not leak into the results
        want, got = eager(crops[:n]), graph(crops[:n])
        assert got.shape == want.shape
        assert _rel(got, want) < 1e-2, n
    assert sorted(k[0] for k in graph._graphs) == [1, 4, 8]


def test_graph_results_do_not_alias_between_calls(w32, crops):
    graph = make_backend("torch-fp16", w32)  # on a GPU: CUDA-graph replay
    a = graph(crops[:2])
    b = graph(crops[2:4])
    a_again = graph(crops[:2])
    np.testing.assert_array_equal(a, a_again)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", ["torch-fp16", "torch-bf16", "torch-fp16-autocast"])
def test_reduced_precision_backends_stay_close(w32, crops, name):
    """Random weights give flat heatmaps (keypoints say little), so compare the heatmaps themselves."""
    want = make_backend("torch", w32, fold_bn=False)(crops)
    # torch-fp16-autocast is an exploratory variant (benchmarks/backend_variants.py), the others product names
    make = backend_variants().make_variant if name in backend_variants().VARIANTS else make_backend
    got = make(name, w32)(crops)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert _rel(got, want) < (0.05 if "bf16" in name else 0.02), name


def test_registry_names_pick_the_gpu_variants(w32):
    for name in ("torch-fast", "torch-bf16", "torch-fp16"):
        backend = make_backend(name, w32)
        assert backend.name == name and backend.cuda_graph and not backend.jit, name
    with pytest.raises(ValueError, match="fused .*CPUs"):
        backend_variants().make_variant("torch-fp32-fused", w32)


def test_fp16_keeps_the_heatmap_head_in_fp32(w32):
    b = TorchBackend(w32, dtype=torch.float16, fp32_head=True)
    convs = [m for m in b.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[-1].weight.dtype == torch.float32 and convs[0].weight.dtype == torch.float16


def test_estimator_torch_fp16_on_cuda_matches_fp32(tmp_path, w32):
    from hrpose.inference import PoseEstimator
    from hrpose.inference.detectors import WholeImageDetector
    from hrpose.models.weights import save_weights

    weights = save_weights(w32, tmp_path / "w.pth")
    cfg = load_config(W32)
    image = (np.random.default_rng(0).random((300, 200, 3)) * 255).astype(np.uint8)
    boxes = [[10, 10, 150, 280, 0.9], [40, 20, 120, 200, 0.8], [0, 0, 199, 299, 0.7]]
    fp32 = PoseEstimator.from_config(cfg, weights, device="cuda", backend="torch", detector=WholeImageDetector())
    fp16 = PoseEstimator.from_config(cfg, weights, device="cuda", backend="torch-fp16", detector=WholeImageDetector())
    assert fp16.device.type == "cuda"
    a, b = fp32(image, boxes=boxes), fp16(image, boxes=boxes)
    assert len(a) == len(b) == 3
    scores_a = np.stack([p.keypoints[:, 2] for p in a])
    scores_b = np.stack([p.keypoints[:, 2] for p in b])
    np.testing.assert_allclose(scores_b, scores_a, atol=0.02 * float(np.abs(scores_a).max()))


def test_bench_on_cuda_reports_every_gpu_backend(tmp_path, w32, crops):
    """bench's default GPU rows (compile aside: minutes; see docs) and an exploratory variant passed as an
    extra backend, as benchmarks/backend_variants.py does."""
    backends = (*(b for b in GPU_DEFAULT_BACKENDS if "compile" not in b), "torch-fp16-autocast")
    rows = run_bench(w32, SIZE, crops, batch_sizes=(1, 4), iters=3, warmup=1, backends=backends,
                     workdir=tmp_path, device="cuda", log=lambda s: None,
                     extra_backends=backend_variants().factories(["torch-fp16-autocast"]))  # fmt: skip
    want = ["auto = torch-fast" if b == "auto" else b for b in backends]
    assert [r.backend for r in rows] == ["eager-fp32 (baseline)", *want]
    assert all(r.ms_per_crop[1] > 0 and r.ms_per_crop[4] > 0 for r in rows)
    graph = {r.backend: r for r in rows}["torch-fp16"]
    assert graph.max_abs_heatmap_err < 0.05 * float(np.abs(make_backend("torch", w32, fold_bn=False)(crops)).max())
    kp = keypoints_input_px(make_backend("torch", w32, fold_bn=False)(crops), SIZE)
    assert kp.shape == (len(crops), 17, 2)


def test_amp_training_steps_on_cuda(tmp_path, cuda):
    """A few fp16-AMP (GradScaler) and bf16-AMP steps of the real trainer on CUDA: finite, falling loss."""
    import yaml

    from hrpose.engine import train

    root = mini_coco(tmp_path, 3)
    cfg = yaml.safe_load(W32.read_text())
    cfg["DATASET"].update(ROOT=str(root), TRAIN_SET="train2017", TEST_SET="train2017")
    cfg["MODEL"].update(PRETRAINED="", IMAGE_SIZE=[96, 128], HEATMAP_SIZE=[24, 32])
    cfg["TRAIN"].update(END_EPOCH=3, BATCH_SIZE_PER_GPU=4, LR_STEP=[10, 20])
    cfg["TEST"].update(BATCH_SIZE_PER_GPU=8, USE_GT_BBOX=True, COCO_BBOX_FILE="")
    cfg["WORKERS"] = 0
    for amp in ("fp16", "bf16"):
        cfg["HRPOSE"] = {"AMP": amp, "CHANNELS_LAST": True, "TENSORBOARD": False, "MAX_ITERS_PER_EPOCH": 4}
        path = tmp_path / f"{amp}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = train(load_config(path, ["OUTPUT_DIR", str(tmp_path / amp), "LOG_DIR", str(tmp_path / "log")]), path,
                    device="cuda")  # fmt: skip
        assert res["epochs"] == 3
        log = next((tmp_path / amp).rglob("*_train.log")).read_text()
        assert "device cuda" in log and "nan" not in log.lower()


def test_torch_compile_backend_on_cuda(w32, crops):
    """`--backend torch-compile` on a GPU: inductor with its CUDA graphs, fp32, the eager model's heatmaps."""
    backend = make_backend("torch-compile", w32)
    assert backend.name == "torch-compile" and backend.compiled
    want = make_backend("torch", w32, fold_bn=False)(crops[:4])
    for _ in range(3):  # compile, record, replay
        got = backend(crops[:4])
    assert _rel(got, want) < 1e-2


def test_export_and_fold_leave_a_cuda_model_on_cuda_in_train_mode(tmp_path, cuda):
    """`export_onnx` exports from a CPU copy and `fold_batchnorm` folds a copy: the caller's CUDA model
    keeps its device, train mode and the very same parameter tensors."""
    from hrpose.export import export_onnx, fold_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 5, 1),
    ).to(cuda).train()  # fmt: skip
    params = {k: (id(v), v.detach().clone()) for k, v in model.state_dict(keep_vars=True).items()}
    report = export_onnx(model, tmp_path / "m.onnx", (32, 32))
    folded = fold_batchnorm(model)
    assert report.path.is_file() and next(folded.parameters()).is_cuda and not folded.training
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict(keep_vars=True).items():
        assert v.is_cuda and id(v) == params[k][0] and torch.equal(v.detach(), params[k][1]), k
