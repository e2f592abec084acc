"""What this machine can run fast and correctly: the probe behind `--backend auto`, `hrpose info` and the
tests that need a capability.

- CPU instruction sets, from `/proc/cpuinfo` (Linux; elsewhere only what `platform` and torch say), *capped*
  by the two switches that make a newer CPU behave as an older one: oneDNN's `ONEDNN_MAX_CPU_ISA` (e.g.
  `AVX2`) and ATen's `ATEN_CPU_CAPABILITY` (e.g. `avx2`). A capped machine is treated as the older CPU, so
  a machine with AMX, run with `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`, answers as an AVX2 one.
- what ATen dispatches to (`torch.backends.cpu.get_cpu_capability()`), whether oneDNN is built in;
- whether the oneDNN post-op fusion of `hrpose.runtime.fusion` runs, in fp32 and in bf16: a tiny real try of the
  operators (a 3x3 conv with a packed weight and a ReLU post-op), once per process and dtype;
- whether bf16 is *fast*: the CPU has bf16 arithmetic (AVX512_BF16, AMX-BF16 or AVX-NE-CONVERT, within the
  caps) and the try above succeeds. Without the hardware, oneDNN either refuses (the bf16 weight reorder
  needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT) or emulates bf16 in software, ~10x slower than fp32, which we
  never run silently;
- the CUDA device, its compute capability, and fp16 / bf16 support.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

# the ISA features the probe reports, by their /proc/cpuinfo names
X86_FEATURES = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni", "avx512_bf16",
    "avx512_fp16", "avx_ne_convert", "amx_bf16", "amx_int8", "amx_fp16",
)  # fmt: skip
ARM_FEATURES = ("asimd", "asimdhp", "asimddp", "sve", "sve2", "bf16", "i8mm")

# oneDNN's ONEDNN_MAX_CPU_ISA values (oneDNN 3.x names and their older aliases) -> the x86 features a
# kernel may use under that cap; "ALL" / "DEFAULT" cap nothing
_AVX2 = {"avx2", "fma"}
_AVX512 = _AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}
_ONEDNN_CAPS: dict[str, set[str]] = {
    "SSE41": set(),
    "AVX": set(),
    "AVX2": _AVX2,
    "AVX2_VNNI": _AVX2 | {"avx_vnni"},
    "AVX2_VNNI_2": _AVX2 | {"avx_vnni", "avx_ne_convert"},
    "AVX512_CORE": _AVX512,
    "AVX512_CORE_VNNI": _AVX512 | {"avx512_vnni"},
    "AVX512_CORE_BF16": _AVX512 | {"avx512_vnni", "avx512_bf16"},
    "AVX10_1_512": _AVX512 | {"avx512_vnni", "avx512_bf16", "avx512_fp16"},
    "AVX512_CORE_FP16": _AVX512 | {"avx512_vnni", "avx512_bf16", "avx512_fp16"},
    "AVX10_1_512_AMX": _AVX512 | {"avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8"},
    "AVX512_CORE_AMX": _AVX512 | {"avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8"},
}
_ALL_X86 = set(X86_FEATURES)
_ONEDNN_CAPS["AVX10_1_512_AMX_FP16"] = _ALL_X86
_ONEDNN_CAPS["AVX512_CORE_AMX_FP16"] = _ALL_X86
# ATen's ATEN_CPU_CAPABILITY values -> the features its vectorised kernels may use
_ATEN_CAPS: dict[str, set[str]] = {"default": set(), "avx2": _AVX2, "avx512": _ALL_X86}

BF16_FEATURES = ("avx512_bf16", "amx_bf16", "avx_ne_convert")


def read_cpuinfo(path: str | os.PathLike[str] = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """(CPU model name, the first processor's feature flags) from a Linux cpuinfo file; ('', set()) elsewhere."""
    name, flags = "", set[str]()
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not name:
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return name, flags


def capped_features(flags: set[str], onednn_max_isa: str | None, aten_capability: str | None) -> set[str]:
    """The CPU `flags` a program may use under the caps (None or empty: no cap; unknown values cap nothing,
    as oneDNN and ATen ignore them). Non-x86 flags pass through."""
    usable = set(flags)
    if onednn_max_isa:
        allowed = _ONEDNN_CAPS.get(onednn_max_isa.strip().upper())
        if allowed is not None:
            usable = {f for f in usable if f not in _ALL_X86 or f in allowed}
    if aten_capability:
        allowed = _ATEN_CAPS.get(aten_capability.strip().lower())
        if allowed is not None:
            usable = {f for f in usable if f not in _ALL_X86 or f in allowed}
    return usable


@functools.cache
def _fusion_runs(dtype_name: str) -> tuple[bool, str]:
    """Try oneDNN's fused convolution with a packed weight, once per process: (works, why not)."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False, "this PyTorch build has no oneDNN"
    ops = getattr(torch.ops, "mkldnn", None)
    if ops is None or not hasattr(ops, "_convolution_pointwise") or not hasattr(ops, "_reorder_convolution_weight"):
        return False, "this PyTorch build has no oneDNN fused convolution operators"
    dtype = getattr(torch, dtype_name)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 8, 6, 5, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(8, 8, 3, 3, generator=g).to(dtype)
        b = torch.zeros(8, dtype=dtype)
        with torch.no_grad():
            packed = ops._reorder_convolution_weight(w, [1, 1], [1, 1], [1, 1], 1, list(x.shape))
            y = ops._convolution_pointwise(x, packed, b, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
            want = torch.nn.functional.conv2d(x.float(), w.float(), None, 1, 1).relu()
        tol = 1e-4 if dtype == torch.float32 else 0.05
        if not torch.allclose(y.float(), want, atol=tol * float(want.abs().max()) + 1e-6):
            return False, f"oneDNN's fused {dtype_name} convolution gave wrong results on this CPU"
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return False, f"oneDNN's fused {dtype_name} convolution fails on this CPU ({first})"
    return True, ""


def fusion_runs(dtype_name: str = "float32") -> bool:
    """Whether oneDNN's fused convolution with packed weights really runs here in `dtype_name` (cached)."""
    return _fusion_runs(dtype_name)[0]


@dataclass(frozen=True)
class Capabilities:
    arch: str
    cpu_name: str
    cpu_flags: frozenset[str]  # every flag the OS reports
    features: frozenset[str]  # the reported X86_FEATURES / ARM_FEATURES usable under the caps
    hw_features: frozenset[str]  # the same without the caps
    onednn_max_isa: str | None
    aten_cpu_capability_env: str | None
    aten_capability: str  # what ATen dispatches to (it honours ATEN_CPU_CAPABILITY itself)
    onednn: bool
    cpu_cores: int | None
    cuda_device: str | None = None
    cuda_capability: tuple[int, int] | None = None
    cuda_fp16: bool = False
    cuda_bf16: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def capped(self) -> bool:
        return self.features != self.hw_features

    @property
    def is_x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686", "i386", "x86")

    @property
    def is_arm(self) -> bool:
        return self.arch in ("aarch64", "arm64") or self.arch.startswith("arm")

    @property
    def avx512(self) -> bool:
        return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= self.features

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.features

    @property
    def vnni(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni", "asimddp"} & self.features)

    @property
    def bf16_hardware(self) -> bool:
        """bf16 arithmetic in hardware, within the caps (x86: AVX512_BF16 / AMX-BF16 / AVX-NE-CONVERT)."""
        if self.is_x86:
            return bool(set(BF16_FEATURES) & self.features)
        return "bf16" in self.features  # ARMv8.6 BF16 (oneDNN's ACL path)

    @property
    def fusion_fp32(self) -> bool:
        return self.onednn and fusion_runs("float32")

    @property
    def bf16_fast(self) -> bool:
        """bf16 CPU inference is faster than fp32 here: bf16 hardware and oneDNN's fused bf16 conv runs."""
        return self.onednn and self.bf16_hardware and fusion_runs("bfloat16")

    def missing(self, what: str) -> str:
        """Why `what` ("bf16", "fusion", "cuda", "cuda-bf16", "cuda-fp16", "avx512", "amx", "vnni") is not
        available here, or "" when it is."""
        if what == "bf16":
            if not self.onednn:
                return "this PyTorch build has no oneDNN"
            if not self.bf16_hardware:
                have = ", ".join(f for f in ("avx2", "avx512f") if f in self.features) or "neither AVX2 nor AVX-512"
                cap = f" under ONEDNN_MAX_CPU_ISA/ATEN_CPU_CAPABILITY ({self.cap_text()})" if self.capped else ""
                return (f"this CPU has no bf16 arithmetic (needs AVX512_BF16, AMX-BF16 or AVX-NE-CONVERT; "
                        f"it has {have}{cap}): bf16 would run emulated, slower than fp32")  # fmt: skip
            return _fusion_runs("bfloat16")[1]
        if what == "fusion":
            return "" if self.fusion_fp32 else _fusion_runs("float32")[1]
        if what == "cuda":
            return "" if self.cuda_device else "no CUDA device is available"
        if what == "cuda-fp16":
            return "" if self.cuda_fp16 else "no CUDA device with fp16 is available"
        if what == "cuda-bf16":
            return "" if self.cuda_bf16 else "no CUDA device with bf16 (compute capability >= 8.0) is available"
        if what in ("avx512", "amx", "vnni", "avx2"):
            ok = {"avx512": self.avx512, "amx": self.amx, "vnni": self.vnni,
                  "avx2": "avx2" in self.features}[what]  # fmt: skip
            return "" if ok else f"this CPU (as capped: {self.cap_text()}) has no {what.upper()}"
        raise ValueError(f"unknown capability {what!r}")

    def has(self, what: str) -> bool:
        return not self.missing(what)

    def cap_text(self) -> str:
        parts = []
        if self.onednn_max_isa:
            parts.append(f"ONEDNN_MAX_CPU_ISA={self.onednn_max_isa}")
        if self.aten_cpu_capability_env:
            parts.append(f"ATEN_CPU_CAPABILITY={self.aten_cpu_capability_env}")
        return " ".join(parts) or "no caps"

    def cpu_kind(self) -> str:
        """The CPU kind benchmark tables are kept per: amx | avx512-bf16 | avx512 | avx2 | neon | baseline."""
        if self.amx:
            return "amx"
        if self.avx512 and "avx512_bf16" in self.features:
            return "avx512-bf16"
        if self.avx512:
            return "avx512"
        if "avx2" in self.features:
            return "avx2"
        return "neon" if self.is_arm else "baseline"

    def line(self) -> str:
        """One line for a benchmark table or a bug report."""
        order = [*X86_FEATURES, *ARM_FEATURES]
        shown = " ".join(f for f in order if f in self.features and f not in ("fma", "asimd")) or "no AVX2"
        if self.is_arm and "asimd" in self.features:
            shown = "neon " + shown
        cores = f"{self.cpu_cores} cores" if self.cpu_cores else "cores unknown"
        capped = self.capped or self.onednn_max_isa or self.aten_cpu_capability_env
        caps = f"; capped by {self.cap_text()}" if capped else ""
        gpu = f"; GPU {self.cuda_device}" if self.cuda_device else "; no GPU"
        return (f"{self.cpu_name or self.arch} ({shown}; ATen {self.aten_capability}; "
                f"oneDNN {'yes' if self.onednn else 'no'}; bf16 {'fast' if self.bf16_fast else 'no'}){caps}; "
                f"{cores}{gpu}")  # fmt: skip


@functools.lru_cache(maxsize=1)
def probe() -> Capabilities:
    """This process's machine (cached: the caps are read by oneDNN and ATen once, at start-up, too)."""
    import torch

    arch = platform.machine().lower()
    name, flags = read_cpuinfo()
    if not name:
        name = platform.processor() or arch
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or None
    aten_env = os.environ.get("ATEN_CPU_CAPABILITY") or None
    aten = str(torch.backends.cpu.get_cpu_capability())
    if not flags and arch in ("x86_64", "amd64"):  # no cpuinfo (macOS, Windows): what ATen found
        flags = {"AVX2": _AVX2, "AVX512": _AVX512}.get(aten, set()).copy()
    reported = {f for f in flags if f in X86_FEATURES or f in ARM_FEATURES}
    features = capped_features(reported, onednn_cap, aten_env)
    notes: list[str] = []
    cuda_device: str | None = None
    cuda_cap: tuple[int, int] | None = None
    fp16 = bf16 = False
    if torch.cuda.is_available():
        try:
            cuda_device = torch.cuda.get_device_name(0)
            major, minor = torch.cuda.get_device_capability(0)
            cuda_cap = (int(major), int(minor))
            fp16 = cuda_cap >= (5, 3)
            bf16 = bool(torch.cuda.is_bf16_supported())
        except (RuntimeError, AssertionError) as e:  # a broken driver: say so, run on the CPU
            notes.append(f"CUDA is installed but unusable: {e}")
            cuda_device = None
    return Capabilities(
        arch=arch,
        cpu_name=name,
        cpu_flags=frozenset(flags),
        features=frozenset(features),
        hw_features=frozenset(reported),
        onednn_max_isa=onednn_cap,
        aten_cpu_capability_env=aten_env,
        aten_capability=aten,
        onednn=bool(torch.backends.mkldnn.is_available()),
        cpu_cores=os.cpu_count(),
        cuda_device=cuda_device,
        cuda_capability=cuda_cap,
        cuda_fp16=fp16,
        cuda_bf16=bf16,
        notes=tuple(notes),
    )


def versions() -> dict[str, str]:
    """Versions of what inference runs on (absent optional packages say 'not installed')."""
    import importlib

    import torch

    out = {"python": platform.python_version(), "torch": str(torch.__version__)}
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    for name, module in (("onnxruntime", "onnxruntime"), ("openvino", "openvino"), ("opencv", "cv2"),
                         ("numpy", "numpy"), ("onnx", "onnx")):  # fmt: skip
        try:
            out[name] = str(getattr(importlib.import_module(module), "__version__", "unknown"))
        except Exception:  # an optional package missing or broken: report, never fail
            out[name] = "not installed"
    return out
