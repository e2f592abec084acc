"""Where the quick start's training time goes, on this machine, in one process (interleaved rounds).

    python -m benchmarks.quickstart_profile [--cfg experiments/synthetic/w16_128x96_synth.yaml] [--rounds 5]
        [--steps 8] [--threads 2]

Needs ``data/synth`` (``hrpose synth --out data/synth --images 1000 --val-images 100 --seed 0``). Parts, each
timed per round (wall seconds and this process's CPU seconds, all threads):
  step        one training step (forward, loss, backward, Adam) on ready batches, fp32, ``--threads`` threads
  step_cl     the same with channels_last model and input
  sample      one training sample made by the dataset (decode, warp, uint8 crop; what the data worker does),
              one thread (``time.thread_time``)
  targets     the device-side normalisation and heatmap targets of one batch (main process)
  validate    one validation pass over the val split (inference with flip test + COCO evaluation)
Rounds interleave the parts, so load from other jobs affects all alike; the report gives median (min-max).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.4f} ({min(xs):.4f}-{max(xs):.4f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", default=str(ROOT / "experiments/synthetic/w16_128x96_synth.yaml"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="training steps per round and variant")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-validate", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from hrpose.config import load_config
    from hrpose.data import build_dataset
    from hrpose.data.device_targets import DeviceTargetEncoder
    from hrpose.data.fastcrop import normalize_on_device
    from hrpose.engine.distributed import DistInfo
    from hrpose.engine.evaluate import make_eval_loader, validate
    from hrpose.engine.logging import setup_logger
    from hrpose.engine.train import build_optimizer
    from hrpose.losses import build_loss
    from hrpose.models import build_model
    from hrpose.pipeline import InferenceSettings

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.cfg, ["DATASET.ROOT", str(ROOT / "data/synth/")])
    ds = build_dataset(cfg, "train", True)
    ds.set_epoch(0)
    enc = DeviceTargetEncoder(ds.codec)
    bs = int(cfg.TRAIN.BATCH_SIZE_PER_GPU)
    crit = build_loss(cfg)
    models = {}
    for name in ("step", "step_cl"):
        torch.manual_seed(0)
        m = build_model(cfg, is_train=True)
        if name == "step_cl":
            m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        m.train()
        models[name] = (m, build_optimizer(m, "adam", float(cfg.TRAIN.LR)))

    def batch(start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items = [ds[(start + j) % len(ds)] for j in range(bs)]
        x = torch.stack([it[0] for it in items])
        joints = torch.stack([torch.as_tensor(it[3]["joints"]) for it in items])
        vis = torch.stack([torch.as_tensor(it[3]["joints_vis"]) for it in items])
        t, w = enc(joints, vis)
        return normalize_on_device(x), t, w

    batches = [batch(i * bs) for i in range(4)]
    res: dict[str, list[float]] = {}

    def rec(key: str, v: float) -> None:
        res.setdefault(key, []).append(v)

    val_ds = build_dataset(cfg, "test", False)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))  # type: ignore[call-arg]
    tmp = Path(tempfile.mkdtemp(prefix="qsprof_"))
    setup_logger(tmp, "prof", "train")
    settings = InferenceSettings.from_config(cfg)
    for r in range(args.rounds):
        for name, (m, opt) in models.items():
            w0, c0 = time.perf_counter(), time.process_time()
            for s in range(args.steps):
                x, t, w = batches[s % len(batches)]
                if name == "step_cl":
                    x = x.contiguous(memory_format=torch.channels_last)
                out = m(x)
                loss = crit(out, t, w)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                float(loss)
            rec(name + " wall s/step", (time.perf_counter() - w0) / args.steps)
            rec(name + " cpu s/step", (time.process_time() - c0) / args.steps)
        t0 = time.thread_time()
        n = 64
        for j in range(n):
            ds[(r * n + j) % len(ds)]
        rec("sample cpu s/sample", (time.thread_time() - t0) / n)
        items = [ds[j] for j in range(bs)]
        x = torch.stack([it[0] for it in items])
        joints = torch.stack([torch.as_tensor(it[3]["joints"]) for it in items])
        vis = torch.stack([torch.as_tensor(it[3]["joints_vis"]) for it in items])
        w0 = time.perf_counter()
        for _ in range(10):
            t, w = enc(joints, vis)
            normalize_on_device(x)
        rec("targets wall s/batch", (time.perf_counter() - w0) / 10)
        if not args.skip_validate:
            loader = make_eval_loader(val_ds, int(cfg.TEST.BATCH_SIZE_PER_GPU), int(cfg.WORKERS), info)
            w0, c0 = time.perf_counter(), time.process_time()
            validate(models["step"][0], loader, val_ds, "cpu", codec=val_ds.codec, settings=settings,
                     output_dir=tmp, criterion=crit)  # fmt: skip
            rec("validate wall s", time.perf_counter() - w0)
            rec("validate cpu s (main process)", time.process_time() - c0)
            models["step"][0].train()
    print(f"threads {args.threads}, batch {bs}, rounds {args.rounds}, {args.steps} steps per round")
    for k, v in res.items():
        print(f"{k:34s} {_fmt(v)}")
    for a in ("wall", "cpu"):
        s, c = res[f"step {a} s/step"], res[f"step_cl {a} s/step"]
        ratio = [x / y for x, y in zip(s, c)]
        print(f"channels_last speed-up ({a}): {_fmt(ratio)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
