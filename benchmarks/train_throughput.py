"""Training throughput of a config: the model step alone and the full loop, per training-path option, with
the first steps' losses beside an fp32 eager reference run from the same seed. One command, one run.

    python -m benchmarks.train_throughput [--device cuda] [--cfg W32] [--batch-sizes 32,64,128]
        [--variants fp32,bf16,bf16+cl,...] [--loss-steps 200] [--workers 15] [--budget-s 450] [--json FILE]

Model step ("step"): one training step (forward, loss, backward, optimizer) on batches already on the
device (real coco-mini crops with the w32 augmentation, cycled), timed over ``--steps`` steps after
``--warmup`` steps, with one device synchronisation at the end only (no host syncs in the step: losses stay
on the device and are read once). Full loop ("loop"): the DataLoader (``--workers`` workers, pinned memory
and non-blocking copies on CUDA) feeding the same step; samples/s over ``--steps`` steps after warm-up.

Variants (``+``-joined options; each row says which):
  fp32      eager float32 (TF32 convolutions as PyTorch's default on CUDA) -- the reference
  bf16      autocast bfloat16 (losses in float32)
  cl        channels_last model and input
  fused     Adam/SGD with ``fused=True``
  dev       uint8 input normalised on the device, targets made on the device from joints
            (hrpose.data.device_targets, the same Gaussians as the workers')
  compile   ``torch.compile`` of the model (forward and backward); compile time is reported apart
  graph     CUDA graph of the whole fixed-shape step (capturable Adam), CUDA only
Larger batches use the linear LR scaling rule: LR = TRAIN.LR * batch / TRAIN.BATCH_SIZE_PER_GPU.

Loss check: ``--loss-steps`` steps of each ``--loss-variants`` variant from the same seed, the same
initial weights and the same batches as an fp32 eager run, at the config's batch size; the report gives the
largest |loss - reference loss| against the reference's step-to-step noise (the median |difference of
consecutive reference losses|) and says whether it stays within it. ``--budget-s`` bounds the whole run:
rows that would start after it are listed as skipped, so the command ends in time (8 minutes by default).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
W32 = ROOT / "experiments" / "coco" / "hrnet" / "w32_256x192_adam_lr1e-3.yaml"
DATA = ROOT.parent / "shared" / "data" / "coco-mini"
OPTIONS = ("fp32", "bf16", "cl", "fused", "dev", "compile", "graph")


def _machine(device: Any) -> str:
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU used"
    return (f"{cpu}, {os.cpu_count()} logical cores; {gpu}; Python {platform.python_version()}, torch "
            f"{torch.__version__}; load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip


def parse_variant(name: str) -> set[str]:
    opts = set(name.split("+"))
    unknown = opts - set(OPTIONS)
    if unknown:
        raise SystemExit(f"error: variant {name!r}: unknown option(s) {sorted(unknown)}; options: {', '.join(OPTIONS)}")
    return opts


class Runner:
    """The pieces every row shares: config, dataset, preloaded device batches."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from hrpose.data import build_dataset

        self.args = args
        self.device = torch.device(args.device)
        self.cfg = self._with()
        self.base_batch = int(self.cfg.TRAIN.BATCH_SIZE_PER_GPU)
        self.base_lr = float(self.cfg.TRAIN.LR)
        self.dataset = build_dataset(self._with(("HRPOSE.DEVICE_INPUT", False)), "train", True)
        self.dataset_u8 = build_dataset(self._with(("HRPOSE.DEVICE_INPUT", True)), "train", True)
        self._cache: dict[tuple[int, bool], list[tuple[Any, ...]]] = {}

    def _with(self, *pairs: tuple[str, Any]) -> Any:
        from hrpose.config import load_config

        opts = ["DATASET.ROOT", str(self.args.data), "DATASET.TRAIN_SET", "train2017", "DATASET.TEST_SET",
                "train2017", "HRPOSE.SEED", str(self.args.seed), *self.args.opts]  # fmt: skip
        for k, v in pairs:
            opts += [k, str(v)]
        return load_config(str(self.args.cfg), opts)

    def batches(self, batch: int, dev: bool, count: int) -> list[tuple[Any, ...]]:
        """`count` distinct batches of real samples on the device (cycled through the dataset)."""
        import torch

        key = (batch, dev)
        if key not in self._cache:
            ds = self.dataset_u8 if dev else self.dataset
            n = len(ds)
            out = []
            for b in range(count):
                items = [ds[(b * batch + j) % n] for j in range(batch)]
                x = torch.stack([it[0] for it in items]).to(self.device)
                if dev:
                    joints = torch.stack([torch.from_numpy(it[3]["joints"]) for it in items]).to(self.device)
                    vis = torch.stack([torch.from_numpy(it[3]["joints_vis"]) for it in items]).to(self.device)
                    out.append((x, None, None, joints, vis))
                else:
                    t = torch.stack([it[1] for it in items]).to(self.device)
                    w = torch.stack([it[2] for it in items]).to(self.device)
                    out.append((x, t, w, None, None))
            self._cache[key] = out
        return self._cache[key]

    def build(self, opts: set[str], batch: int) -> tuple[Any, Callable[..., Any], float]:
        """(model, step(x, target, weight, joints, vis) -> loss tensor, seconds spent compiling/capturing)."""
        import torch

        from hrpose.data.device_targets import DeviceTargetEncoder
        from hrpose.data.fastcrop import normalize_on_device
        from hrpose.engine.train import _loss_of, build_optimizer
        from hrpose.losses import build_loss
        from hrpose.models import build_model

        cfg, dev = self.cfg, self.device
        torch.manual_seed(self.args.seed)
        model = build_model(cfg, is_train=True).to(dev)
        cl = "cl" in opts
        if cl:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        model.train()
        criterion = build_loss(cfg).to(dev)
        lr = self.base_lr * batch / self.base_batch  # linear scaling rule
        graph = "graph" in opts
        if graph:
            if dev.type != "cuda":
                raise RuntimeError("CUDA graphs need --device cuda")
            opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(lr, device=dev), capturable=True)
        else:
            opt = build_optimizer(model, cfg.TRAIN.OPTIMIZER, lr, momentum=float(cfg.TRAIN.MOMENTUM),
                                  weight_decay=float(cfg.TRAIN.WD), nesterov=bool(cfg.TRAIN.NESTEROV),
                                  fused="fused" in opts)  # fmt: skip
        amp = torch.bfloat16 if "bf16" in opts else None
        encoder = DeviceTargetEncoder(self.dataset.codec) if "dev" in opts else None
        net = model
        setup = 0.0
        if "compile" in opts:
            net = torch.compile(model)

        def step(x: Any, target: Any, weight: Any, joints: Any, vis: Any) -> Any:
            if x.dtype == torch.uint8:
                x = normalize_on_device(x)
            if encoder is not None:
                target, weight = encoder(joints, vis)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            ctx = torch.autocast(device_type=dev.type, dtype=amp) if amp is not None else nullcontext()
            with ctx:
                out = net(x)
            loss = _loss_of(criterion, out, target, weight)
            opt.zero_grad(set_to_none=not graph)
            loss.backward()
            opt.step()
            return loss.detach()

        if not graph:
            return model, step, setup
        # whole-step CUDA graph: static inputs, warm-up on a side stream, capture, then copy + replay
        t0 = time.perf_counter()
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        sample = self.batches(batch, "dev" in opts, 1)[0]
        static = [None if t is None else t.clone() for t in sample]
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                step(*static)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            static_loss = step(*static)
        torch.cuda.synchronize()
        # undo the warm-up steps in place (the graph holds these addresses): the run starts from the same
        # weights and optimizer state as the others, so its losses compare step for step
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(initial[k])
            for state in opt.state.values():
                for v in state.values():
                    if isinstance(v, torch.Tensor):
                        v.zero_()
        setup = time.perf_counter() - t0

        def replay(x: Any, target: Any, weight: Any, joints: Any, vis: Any) -> Any:
            for dst, src in zip(static, (x, target, weight, joints, vis)):
                if dst is not None:
                    dst.copy_(src, non_blocking=True)
            g.replay()
            return static_loss.clone()

        return model, replay, setup

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def model_step(self, opts: set[str], batch: int) -> dict[str, Any]:
        import torch

        _, step, setup = self.build(opts, batch)
        data = self.batches(batch, "dev" in opts, self.args.distinct)
        t0 = time.perf_counter()
        for i in range(self.args.warmup):
            step(*data[i % len(data)])
        self.sync()
        warm = time.perf_counter() - t0
        times = []
        losses = []
        for _ in range(self.args.repeats):
            t0 = time.perf_counter()
            for i in range(self.args.steps):
                losses.append(step(*data[i % len(data)]))
            self.sync()
            times.append(time.perf_counter() - t0)
        finite = bool(torch.isfinite(torch.stack(losses)).all())  # the one host read of the losses
        rates = [batch * self.args.steps / t for t in times]
        return {"samples_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
                "setup_s": setup + warm, "finite": finite}  # fmt: skip

    def full_loop(self, opts: set[str], batch: int) -> dict[str, Any]:
        import torch
        from torch.utils.data import DataLoader, RandomSampler

        _, step, setup = self.build(opts, batch)
        ds = self.dataset_u8 if "dev" in opts else self.dataset
        cuda = self.device.type == "cuda"
        total = (self.args.warmup + self.args.steps) * batch
        loader = DataLoader(ds, batch_size=batch, sampler=RandomSampler(ds, replacement=True, num_samples=total),
                            num_workers=self.args.workers, pin_memory=cuda, drop_last=True,
                            persistent_workers=False, prefetch_factor=4 if self.args.workers else None)  # fmt: skip
        losses = []
        t0 = time.perf_counter()
        for i, (x, target, weight, meta) in enumerate(loader):
            if i == self.args.warmup:
                self.sync()
                t0 = time.perf_counter()
            x = x.to(self.device, non_blocking=cuda)
            if "dev" in opts:
                joints = meta["joints"].to(self.device, non_blocking=cuda)
                vis = meta["joints_vis"].to(self.device, non_blocking=cuda)
                losses.append(step(x, None, None, joints, vis))
            else:
                target = target.to(self.device, non_blocking=cuda)
                weight = weight.to(self.device, non_blocking=cuda)
                losses.append(step(x, target, weight, None, None))
        self.sync()
        seconds = time.perf_counter() - t0
        finite = bool(torch.isfinite(torch.stack(losses)).all())
        return {"samples_per_s": batch * self.args.steps / seconds, "setup_s": setup, "finite": finite}

    def losses(self, opts: set[str], steps: int) -> list[float]:
        """The first `steps` losses at the config's batch, fixed batches, same seed and initial weights."""
        import torch

        batch = self.base_batch if self.args.loss_batch <= 0 else self.args.loss_batch
        _, step, _ = self.build(opts, batch)
        data = self.batches(batch, "dev" in opts, self.args.distinct)
        out = [step(*data[i % len(data)]) for i in range(steps)]
        return [float(v) for v in torch.stack(out).cpu()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default=str(W32))
    p.add_argument("--data", default=str(DATA), help="COCO-layout folder with train2017 (coco-mini)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-sizes", default="", help="comma-separated (default: 32,64,128 on CUDA, 4,8 on CPU)")
    p.add_argument("--variants", default="", help="comma-separated; default: all that apply to the device")
    p.add_argument("--loop-variants", default="", help="variants for the full loop (default: fp32 and the fastest)")
    p.add_argument("--loss-variants", default="", help="variants compared with fp32 (default: the fastest)")
    p.add_argument("--steps", type=int, default=0, help="timed steps per row (default 50 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=0, help="untimed steps first (default 10 on CUDA, 1 on CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of the model step (median, min-max)")
    p.add_argument("--distinct", type=int, default=4, help="distinct preloaded batches the model step cycles")
    p.add_argument("--loss-steps", type=int, default=0, help="default 200 on CUDA, 4 on CPU")
    p.add_argument("--loss-batch", type=int, default=0, help="batch of the loss check (0 = the config's)")
    p.add_argument("--workers", type=int, default=-1, help="full-loop workers (default 15 on CUDA, 1 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=450.0, help="skip rows that would start after this")
    p.add_argument("--json", default="")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)

    import torch

    start = time.perf_counter()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device; run on a GPU machine or use --device cpu")
        return 2
    if not Path(args.data, "annotations").is_dir():
        print(f"error: {args.data} has no annotations/ folder; pass --data with a COCO-layout folder")
        return 2
    args.steps = args.steps or (50 if cuda else 3)
    args.warmup = args.warmup or (10 if cuda else 1)
    args.loss_steps = args.loss_steps or (200 if cuda else 4)
    args.workers = args.workers if args.workers >= 0 else (15 if cuda else 1)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("32,64,128" if cuda else "4,8")).split(",")]
    default_variants = ("fp32,bf16,bf16+cl,bf16+cl+fused,bf16+cl+fused+dev,bf16+cl+fused+dev+compile,"
                        "bf16+cl+dev+graph" if cuda else "fp32,cl,dev,fused+dev,bf16")  # fmt: skip
    variants = [v for v in (args.variants or default_variants).split(",") if v]
    for v in variants:
        parse_variant(v)
    if cuda:
        torch.backends.cudnn.benchmark = True
    from hrpose.errors import UserError

    try:
        runner = Runner(args)
        runner.build({"fp32"}, 1)  # the model builds from this config (errors are one line, not a traceback)
    except UserError as e:
        print(f"error: {e}")
        return 2
    print(f"Machine: {_machine(runner.device)}")
    print(f"Config: {args.cfg} ({runner.cfg.MODEL.NAME} {list(runner.cfg.MODEL.IMAGE_SIZE)}), base batch "
          f"{runner.base_batch}, LR {runner.base_lr:g} scaled linearly with the batch; data {args.data} "
          f"({len(runner.dataset)} samples)")  # fmt: skip
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []

    def over() -> bool:
        return time.perf_counter() - start > args.budget_s

    def run_row(kind: str, name: str, batch: int) -> None:
        if over():
            skipped.append(f"{kind} {name} batch {batch}")
            return
        opts = parse_variant(name)
        try:
            res = (runner.model_step if kind == "step" else runner.full_loop)(opts, batch)
        except Exception as e:  # an option the device or this PyTorch lacks: reported, not fatal
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            rows.append({"kind": kind, "variant": name, "batch": batch, "error": f"{type(e).__name__}: {first}"})
            print(f"  {kind:4} {name:28} batch {batch:4}: not available ({type(e).__name__}: {first})", flush=True)
            return
        rows.append({"kind": kind, "variant": name, "batch": batch, **res})
        spread = f" ({res['min']:.1f}-{res['max']:.1f})" if "min" in res else ""
        print(f"  {kind:4} {name:28} batch {batch:4}: {res['samples_per_s']:9.1f} samples/s{spread}"
              f"{'' if res['finite'] else '  NON-FINITE LOSS'}", flush=True)  # fmt: skip

    print("model step (batches already on the device):")
    for name in variants:
        for b in batch_sizes:
            run_row("step", name, b)
    ok = [r for r in rows if r["kind"] == "step" and "error" not in r and r["finite"]]
    best = max(ok, key=lambda r: r["samples_per_s"]) if ok else None
    loop_variants = [v for v in args.loop_variants.split(",") if v] or list(
        dict.fromkeys(["fp32"] + ([best["variant"]] if best else []))
    )
    loop_batch = best["batch"] if best else batch_sizes[0]
    print(f"full loop ({args.workers} workers{', pinned memory, non-blocking copies' if cuda else ''}):")
    for name in loop_variants:
        run_row("loop", name, loop_batch)

    loss_variants = [v for v in args.loss_variants.split(",") if v] or ([best["variant"]] if best else [])
    loss_report: dict[str, Any] = {}
    if loss_variants and not over():
        ref = runner.losses({"fp32"}, args.loss_steps)
        noise = statistics.median(abs(a - b) for a, b in zip(ref[1:], ref[:-1])) if len(ref) > 1 else 0.0
        loss_report = {"steps": args.loss_steps, "reference": ref, "reference_step_noise": noise, "variants": {}}
        print(f"loss, first {args.loss_steps} steps (fp32 eager reference; its step-to-step noise, the median "
              f"|consecutive difference|: {noise:.3g}):")  # fmt: skip
        for name in loss_variants:
            if over():
                skipped.append(f"loss {name}")
                continue
            try:
                got = runner.losses(parse_variant(name), args.loss_steps)
            except Exception as e:
                loss_report["variants"][name] = {"error": f"{type(e).__name__}: {str(e)[:160]}"}
                continue
            diff = max(abs(a - b) for a, b in zip(got, ref))
            finite = all(math.isfinite(v) for v in got)
            loss_report["variants"][name] = {"losses": got, "max_abs_diff": diff,
                                             "within_noise": bool(finite and diff <= noise)}  # fmt: skip
            print(f"  {name}: max |loss - reference| {diff:.3g} -> "
                  f"{'within' if finite and diff <= noise else 'NOT within'} the reference's step noise")  # fmt: skip
            show = min(5, args.loss_steps)
            print("    step  reference  " + name)
            for i in list(range(show)) + ([args.loss_steps - 1] if args.loss_steps > show else []):
                print(f"    {i:4}  {ref[i]:.6f}  {got[i]:.6f}")
    ratios = {}
    base = {r["batch"]: r["samples_per_s"] for r in rows if r["kind"] == "step" and r["variant"] == "fp32"
            and "error" not in r}  # fmt: skip
    for r in rows:
        if r["kind"] == "step" and "error" not in r and r["batch"] in base:
            ratios[f"{r['variant']}@{r['batch']}"] = r["samples_per_s"] / base[r["batch"]]
    print("model step vs fp32 eager at the same batch: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    if skipped:
        print(f"skipped (over the {args.budget_s:.0f} s budget): {'; '.join(skipped)}")
    total = time.perf_counter() - start
    print(f"total {total:.0f} s")
    if args.json:
        out = {"machine": _machine(runner.device), "config": str(args.cfg), "device": args.device,
               "base_batch": runner.base_batch, "lr_rule": "linear: LR * batch / TRAIN.BATCH_SIZE_PER_GPU",
               "rows": rows, "ratios_vs_fp32": ratios, "loss": loss_report, "skipped": skipped,
               "seconds": total}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
