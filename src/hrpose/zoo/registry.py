"""The model registry: every downloadable file hrpose knows, with where it comes from and how to check it.

Sources (read from those projects' own model-zoo pages; the URLs are not reachable from our CI, so only the
opt-in ``pytest -m network`` test checks them):

- MMPose 1.x top-down heatmap COCO tables (``configs/body_2d_keypoint/topdown_heatmap/coco/{hrnet,resnet}_coco.md``).
  MMPose 1.x's table links the 256x192 ResNet-101 checkpoint on its 384x288 row (a documentation slip), so the
  ResNet-101 384x288 entry uses the MMPose 0.x checkpoint instead.
- MMPose 0.x MPII tables (``configs/body_2d_keypoint/topdown_heatmap/mpii/{hrnet,resnet}_mpii.md``).
- The YOLOX Human-Art person detectors exported to ONNX by MMDeploy (MMPose ``projects/rtmpose/README.md``,
  also used by rtmlib). Their names carry 8 hex digits, but those are the SHA-256 prefix of the PyTorch checkpoint
  the ONNX was exported from (same stem, ``.pth``), not of the zip: no hash of the zips is published, so
  ``sha256`` is empty for them and their integrity rests on the zip's CRC-32 of the member (checked on extraction).
- ImageNet initialisation: torchvision's original ResNet files (the names the official YAMLs use in
  ``MODEL.PRETRAINED``), HRNet-W32/W48 ImageNet classification weights through MMPose's pretrain mirror (the
  names the official HRNet YAMLs use), and timm's ports of the same HRNet classification models (GitHub releases).

A ``sha256`` of 64 hex digits is a full digest; shorter is the prefix published in the file name. The digit runs
in MMPose file names are SHA-256 prefixes of the files (MMPose's ``tools/misc/publish_model.py`` runs ``sha256sum``
and renames the file ``<name>-<sha[:8]>_<date>.pth``); torchvision's and timm's follow torch.hub's convention
(``check_hash``: the name's digits start the file's SHA-256). Only the opt-in network test checks them for real.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("pose", "detector", "imagenet")
LAYOUTS = (
    "official",
    "mmpose1",
    "mmpose0",
    "torchvision",
    "hrnet-imagenet",
    "timm",
    "onnx-end2end",
    "onnx-yolox-raw",
)


@dataclass(frozen=True)
class ZooEntry:
    """One downloadable file. See the module docstring of :mod:`hrpose.zoo` for the cache layout."""

    name: str  # e.g. "hrnet-w32-coco-256x192"
    kind: str  # "pose" | "detector" | "imagenet"
    filename: str  # file name in the cache (and on a mirror)
    urls: tuple[str, ...]  # first is canonical, the rest mirrors of the SAME bytes
    sha256: str  # full hex digest where known, else the published prefix (>= 8 hex); "" = none published
    layout: str  # key layout / file format, one of LAYOUTS
    config: str | None  # pose models: YAML under hrpose/zoo/configs/ (a copy of experiments/<config>)
    channel_order: str  # "rgb" | "bgr": the input order the checkpoint was trained with
    archive_member: str | None  # zips: the member to extract (matched on its base name), else None
    input_size: tuple[int, int] | None  # (w, h)
    metric: str  # published accuracy, with whose evaluation
    licence: str
    source: str  # human-readable page that lists the file
    member_sha256: str = ""  # zips: full digest of the extracted member when known ("" = accept as is)
    size: int = 0  # the file's size in bytes where published (0 = unknown)
    official_path: str = ""  # where the official HRNet README puts this file (models/pytorch/...), if it does

    @property
    def is_archive(self) -> bool:
        return self.archive_member is not None

    @property
    def member_filename(self) -> str:
        """The bare file name of a zip's member on mirrors (``<zip stem>.onnx``); the file name otherwise."""
        if self.archive_member is None:
            return self.filename
        return self.filename.rsplit(".", 1)[0] + "." + self.archive_member.rsplit(".", 1)[-1]

    @property
    def integrity(self) -> str:
        """How the bytes of this entry are checked, in words (shown by ``hrpose models list``)."""
        if len(self.sha256) == 64:
            text = f"sha256 {self.sha256}"
        elif self.sha256:
            text = f"sha256 prefix {self.sha256} (published in the file name)"
        elif self.is_archive:
            text = ("ONNX graph structure (inputs, outputs, opset); zip CRC-32; sha256 recorded on the first "
                    "verified fetch (trust on first use), every later fetch must match")
        else:
            text = ("no published digest: sha256 recorded on the first fetch (trust on first use), every later "
                    "fetch must match; the file must load as a state_dict of this architecture")
        if self.size:
            text += f"; size {self.size} bytes"
        return text


_MMPOSE1_COCO = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/"
_MMPOSE0 = "https://download.openmmlab.com/mmpose/top_down/"
_MMPOSE_SRC = "https://github.com/open-mmlab/mmpose/blob/main/configs/body_2d_keypoint/topdown_heatmap/"
_MMPOSE0_SRC = "https://github.com/open-mmlab/mmpose/blob/0.x/configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/"
_RTMPOSE_ONNX = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk/"
_RTMPOSE_SRC = "https://github.com/open-mmlab/mmpose/blob/main/projects/rtmpose/README.md"
_TORCHVISION = "https://download.pytorch.org/models/"
_HF_COCOPOSE = "https://huggingface.co/Prophetetc/cocopose/resolve/main/"
_HF_RTMLIB = "https://huggingface.co/datasets/DavidPagnon/rtmlib_models/resolve/main/mmpose/rtmposev1/onnx_sdk/"
_OFFICIAL_SRC = "https://github.com/leoxiaobin/deep-high-resolution-net.pytorch#main-results"
_TIMM_HRNET = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-hrnet/"

APACHE = "Apache-2.0"
BSD3 = "BSD-3-Clause"
MIT = "MIT"


def _hash_in_name(filename: str) -> str:
    """The 8 hex digits after the last '-' of an MMPose/torchvision/timm file name (before '_date' or '.ext')."""
    stem = filename.rsplit(".", 1)[0]
    tail = stem.rsplit("-", 1)[1]
    return tail.split("_", 1)[0]


def _pose(
    name: str, url: str, layout: str, config: str, size: tuple[int, int], metric: str, source: str
) -> ZooEntry:
    filename = url.rsplit("/", 1)[1]
    return ZooEntry(
        name=name,
        kind="pose",
        filename=filename,
        urls=(url,),
        sha256=_hash_in_name(filename),
        layout=layout,
        config=config,
        channel_order="rgb",  # MMPose trains every model on RGB input (data_preprocessor bgr_to_rgb=True)
        archive_member=None,
        input_size=size,
        metric=metric,
        licence=APACHE,
        source=source,
    )


def _official(
    stem: str, dataset: str, config: str, size: tuple[int, int], metric: str, rgb: bool,
    sha256: str = "", nbytes: int = 0,
) -> ZooEntry:
    """A file of the official HRNet model zoo (README "Main Results"), under its official name and path."""
    filename = stem + ".pth"
    # the ten pose_coco files are mirrored under their exact names on the Hugging Face Hub; no public copy of
    # the pose_mpii files is known (the originals are on Google Drive / OneDrive folders, not direct links)
    urls = (_HF_COCOPOSE + filename,) if dataset == "coco" else ()
    return ZooEntry(
        name=stem,
        kind="pose",
        filename=filename,
        urls=urls,
        sha256=sha256,
        layout="official",
        config=config,
        channel_order="rgb" if rgb else "bgr",  # the config's DATASET.COLOR_RGB, as the official code trained
        archive_member=None,
        input_size=size,
        metric=metric,
        licence=MIT,
        source=_OFFICIAL_SRC,
        size=nbytes,
        official_path=f"models/pytorch/pose_{dataset}/{filename}",
    )


def _imagenet(name: str, url: str, layout: str, channel_order: str, metric: str, licence: str, source: str) -> ZooEntry:
    filename = url.rsplit("/", 1)[1]
    return ZooEntry(
        name=name,
        kind="imagenet",
        filename=filename,
        urls=(url,),
        sha256=_hash_in_name(filename),
        layout=layout,
        config=None,
        channel_order=channel_order,
        archive_member=None,
        input_size=(224, 224),
        metric=metric,
        licence=licence,
        source=source,
        official_path=f"models/pytorch/imagenet/{filename}" if layout in ("torchvision", "hrnet-imagenet") else "",
    )


def _detector(name: str, zipname: str, size: int, metric: str) -> ZooEntry:
    return ZooEntry(
        name=name,
        kind="detector",
        filename=zipname,
        # the zip from OpenMMLab, then the bare end2end.onnx taken out of it (rtmlib_models, Hugging Face)
        urls=(_RTMPOSE_ONNX + zipname, _HF_RTMLIB + zipname.rsplit(".", 1)[0] + ".onnx"),
        sha256="",  # none published for the zip (see the module docstring)
        layout="onnx-end2end",
        config=None,
        channel_order="bgr",  # MMDeploy SDK export: 1x3xHxW BGR 0-255, letterboxed top-left on grey 114
        archive_member="end2end.onnx",
        input_size=(size, size),
        metric=metric,
        licence=APACHE,
        source=_RTMPOSE_SRC,
    )


_C = _MMPOSE_SRC + "coco/"
_M0 = _MMPOSE0_SRC + "mpii/"
_ENTRIES: tuple[ZooEntry, ...] = (
    # --- COCO, MMPose 1.x (AP on COCO val2017 with MMPose's person detections) ---
    _pose("hrnet-w32-coco-256x192", _MMPOSE1_COCO + "td-hm_hrnet-w32_8xb64-210e_coco-256x192-81c58e40_20220909.pth",
          "mmpose1", "coco/hrnet/w32_256x192_adam_lr1e-3.yaml", (192, 256),
          "COCO val AP 74.9 (MMPose)", _C + "hrnet_coco.md"),
    _pose("hrnet-w32-coco-384x288", _MMPOSE1_COCO + "td-hm_hrnet-w32_8xb64-210e_coco-384x288-ca5956af_20220909.pth",
          "mmpose1", "coco/hrnet/w32_384x288_adam_lr1e-3.yaml", (288, 384),
          "COCO val AP 76.1 (MMPose)", _C + "hrnet_coco.md"),
    _pose("hrnet-w48-coco-256x192", _MMPOSE1_COCO + "td-hm_hrnet-w48_8xb32-210e_coco-256x192-0e67c616_20220913.pth",
          "mmpose1", "coco/hrnet/w48_256x192_adam_lr1e-3.yaml", (192, 256),
          "COCO val AP 75.6 (MMPose)", _C + "hrnet_coco.md"),
    _pose("hrnet-w48-coco-384x288", _MMPOSE1_COCO + "td-hm_hrnet-w48_8xb32-210e_coco-384x288-c161b7de_20220915.pth",
          "mmpose1", "coco/hrnet/w48_384x288_adam_lr1e-3.yaml", (288, 384),
          "COCO val AP 76.7 (MMPose)", _C + "hrnet_coco.md"),
    _pose("resnet50-coco-256x192", _MMPOSE1_COCO + "td-hm_res50_8xb64-210e_coco-256x192-04af38ce_20220923.pth",
          "mmpose1", "coco/resnet/res50_256x192_d256x3_adam_lr1e-3.yaml", (192, 256),
          "COCO val AP 71.8 (MMPose)", _C + "resnet_coco.md"),
    _pose("resnet50-coco-384x288", _MMPOSE1_COCO + "td-hm_res50_8xb64-210e_coco-384x288-7b8db90e_20220923.pth",
          "mmpose1", "coco/resnet/res50_384x288_d256x3_adam_lr1e-3.yaml", (288, 384),
          "COCO val AP 73.1 (MMPose)", _C + "resnet_coco.md"),
    _pose("resnet101-coco-256x192", _MMPOSE1_COCO + "td-hm_res101_8xb64-210e_coco-256x192-065d3625_20220926.pth",
          "mmpose1", "coco/resnet/res101_256x192_d256x3_adam_lr1e-3.yaml", (192, 256),
          "COCO val AP 72.8 (MMPose)", _C + "resnet_coco.md"),
    _pose("resnet101-coco-384x288", _MMPOSE0 + "resnet/res101_coco_384x288-8c71bdc9_20200709.pth",
          "mmpose0", "coco/resnet/res101_384x288_d256x3_adam_lr1e-3.yaml", (288, 384),
          "COCO val AP 74.8 (MMPose 0.x)", _MMPOSE0_SRC + "coco/resnet_coco.md"),
    _pose("resnet152-coco-256x192", _MMPOSE1_COCO + "td-hm_res152_8xb32-210e_coco-256x192-0345f330_20220928.pth",
          "mmpose1", "coco/resnet/res152_256x192_d256x3_adam_lr1e-3.yaml", (192, 256),
          "COCO val AP 73.6 (MMPose)", _C + "resnet_coco.md"),
    _pose("resnet152-coco-384x288", _MMPOSE1_COCO + "td-hm_res152_8xb32-210e_coco-384x288-7fbb906f_20220927.pth",
          "mmpose1", "coco/resnet/res152_384x288_d256x3_adam_lr1e-3.yaml", (288, 384),
          "COCO val AP 75.0 (MMPose)", _C + "resnet_coco.md"),
    # --- MPII, MMPose 0.x checkpoints (PCKh@0.5 on MPII val, MMPose) ---
    _pose("hrnet-w32-mpii-256x256", _MMPOSE0 + "hrnet/hrnet_w32_mpii_256x256-6c4f923f_20200812.pth",
          "mmpose0", "mpii/hrnet/w32_256x256_adam_lr1e-3.yaml", (256, 256),
          "MPII val PCKh 90.0 (MMPose)", _M0 + "hrnet_mpii.md"),
    _pose("hrnet-w48-mpii-256x256", _MMPOSE0 + "hrnet/hrnet_w48_mpii_256x256-92cab7bd_20200812.pth",
          "mmpose0", "mpii/hrnet/w48_256x256_adam_lr1e-3.yaml", (256, 256),
          "MPII val PCKh 90.1 (MMPose)", _M0 + "hrnet_mpii.md"),
    _pose("resnet50-mpii-256x256", _MMPOSE0 + "resnet/res50_mpii_256x256-418ffc88_20200812.pth",
          "mmpose0", "mpii/resnet/res50_256x256_d256x3_adam_lr1e-3.yaml", (256, 256),
          "MPII val PCKh 88.2 (MMPose)", _M0 + "resnet_mpii.md"),
    _pose("resnet101-mpii-256x256", _MMPOSE0 + "resnet/res101_mpii_256x256-416f5d71_20200812.pth",
          "mmpose0", "mpii/resnet/res101_256x256_d256x3_adam_lr1e-3.yaml", (256, 256),
          "MPII val PCKh 88.8 (MMPose)", _M0 + "resnet_mpii.md"),
    _pose("resnet152-mpii-256x256", _MMPOSE0 + "resnet/res152_mpii_256x256-3ecba29d_20200812.pth",
          "mmpose0", "mpii/resnet/res152_256x256_d256x3_adam_lr1e-3.yaml", (256, 256),
          "MPII val PCKh 88.9 (MMPose)", _M0 + "resnet_mpii.md"),
    # --- the official HRNet model zoo (README "Main Results"; AP/PCKh as the official README reports them) ---
    _official("pose_hrnet_w32_256x192", "coco", "coco/hrnet/w32_256x192_adam_lr1e-3.yaml", (192, 256),
              "COCO val AP 74.4 (official)", True,
              "19bc083708bb8d873211e50d85d56344c10290c6e8b564c813fdde09645c4c1c", 114_721_619),
    _official("pose_hrnet_w32_384x288", "coco", "coco/hrnet/w32_384x288_adam_lr1e-3.yaml", (288, 384),
              "COCO val AP 75.8 (official)", True),
    _official("pose_hrnet_w48_256x192", "coco", "coco/hrnet/w48_256x192_adam_lr1e-3.yaml", (192, 256),
              "COCO val AP 75.1 (official)", True),
    _official("pose_hrnet_w48_384x288", "coco", "coco/hrnet/w48_384x288_adam_lr1e-3.yaml", (288, 384),
              "COCO val AP 76.3 (official)", True,
              "95e0fec3194826d5e3f806ea89be68bbb84517b114c3a32b3058c56610b5ef61", 255_061_287),
    _official("pose_resnet_50_256x192", "coco", "coco/resnet/res50_256x192_d256x3_adam_lr1e-3.yaml", (192, 256),
              "COCO val AP 70.4 (official)", False),
    _official("pose_resnet_50_384x288", "coco", "coco/resnet/res50_384x288_d256x3_adam_lr1e-3.yaml", (288, 384),
              "COCO val AP 72.2 (official)", False),
    _official("pose_resnet_101_256x192", "coco", "coco/resnet/res101_256x192_d256x3_adam_lr1e-3.yaml", (192, 256),
              "COCO val AP 71.4 (official)", False),
    _official("pose_resnet_101_384x288", "coco", "coco/resnet/res101_384x288_d256x3_adam_lr1e-3.yaml", (288, 384),
              "COCO val AP 73.6 (official)", False),
    _official("pose_resnet_152_256x192", "coco", "coco/resnet/res152_256x192_d256x3_adam_lr1e-3.yaml", (192, 256),
              "COCO val AP 72.0 (official)", False),
    _official("pose_resnet_152_384x288", "coco", "coco/resnet/res152_384x288_d256x3_adam_lr1e-3.yaml", (288, 384),
              "COCO val AP 74.3 (official)", False),
    _official("pose_hrnet_w32_256x256", "mpii", "mpii/hrnet/w32_256x256_adam_lr1e-3.yaml", (256, 256),
              "MPII val PCKh 90.3 (official)", True),
    _official("pose_hrnet_w48_256x256", "mpii", "mpii/hrnet/w48_256x256_adam_lr1e-3.yaml", (256, 256),
              "MPII val PCKh 90.1 (official)", True),
    _official("pose_resnet_50_256x256", "mpii", "mpii/resnet/res50_256x256_d256x3_adam_lr1e-3.yaml", (256, 256),
              "MPII val PCKh 88.5 (official)", False),
    _official("pose_resnet_101_256x256", "mpii", "mpii/resnet/res101_256x256_d256x3_adam_lr1e-3.yaml", (256, 256),
              "MPII val PCKh 89.1 (official)", False),
    _official("pose_resnet_152_256x256", "mpii", "mpii/resnet/res152_256x256_d256x3_adam_lr1e-3.yaml", (256, 256),
              "MPII val PCKh 89.6 (official)", False),
    # --- person detectors (ONNX, MMDeploy end2end: boxes after NMS) ---
    _detector("yolox-tiny-humanart", "yolox_tiny_8xb8-300e_humanart-6f3252f9.zip", 416,
              "person AP 47.7 (MMPose; trained on Human-Art + COCO)"),
    _detector("yolox-m-humanart", "yolox_m_8xb8-300e_humanart-c2c7a14a.zip", 640,
              "person AP 59.1 (MMPose; trained on Human-Art + COCO)"),
    # --- ImageNet initialisation ---
    _imagenet("imagenet-resnet50", _TORCHVISION + "resnet50-19c8e357.pth", "torchvision", "rgb",
              "ImageNet top-1 76.13 (torchvision)", BSD3,
              "https://github.com/pytorch/vision/blob/v0.2.2/torchvision/models/resnet.py"),
    _imagenet("imagenet-resnet101", _TORCHVISION + "resnet101-5d3b4d8f.pth", "torchvision", "rgb",
              "ImageNet top-1 77.37 (torchvision)", BSD3,
              "https://github.com/pytorch/vision/blob/v0.2.2/torchvision/models/resnet.py"),
    _imagenet("imagenet-resnet152", _TORCHVISION + "resnet152-b121ed2d.pth", "torchvision", "rgb",
              "ImageNet top-1 78.31 (torchvision)", BSD3,
              "https://github.com/pytorch/vision/blob/v0.2.2/torchvision/models/resnet.py"),
    _imagenet("imagenet-hrnet-w32", "https://download.openmmlab.com/mmpose/pretrain_models/hrnet_w32-36af842e.pth",
              "hrnet-imagenet", "rgb", "ImageNet top-1 78.5 (HRNet)", MIT,
              "https://github.com/HRNet/HRNet-Image-Classification"),
    _imagenet("imagenet-hrnet-w48", "https://download.openmmlab.com/mmpose/pretrain_models/hrnet_w48-8ef0771d.pth",
              "hrnet-imagenet", "rgb", "ImageNet top-1 79.3 (HRNet)", MIT,
              "https://github.com/HRNet/HRNet-Image-Classification"),
    _imagenet("imagenet-hrnet-w32-timm", _TIMM_HRNET + "hrnetv2_w32-90d8c5fb.pth", "timm", "rgb",
              "ImageNet top-1 78.5 (HRNet, ported by timm)", MIT,
              "https://github.com/huggingface/pytorch-image-models/blob/main/timm/models/hrnet.py"),
    _imagenet("imagenet-hrnet-w48-timm", _TIMM_HRNET + "hrnetv2_w48-abd2e6ab.pth", "timm", "rgb",
              "ImageNet top-1 79.3 (HRNet, ported by timm)", MIT,
              "https://github.com/huggingface/pytorch-image-models/blob/main/timm/models/hrnet.py"),
)

REGISTRY: dict[str, ZooEntry] = {e.name: e for e in _ENTRIES}
DEFAULT_POSE_MODEL = "hrnet-w32-coco-256x192"
DEFAULT_DETECTOR = "yolox-tiny-humanart"
# when every source of the default pose model fails: the official W32 256x192 (same architecture and config)
DEFAULT_POSE_FALLBACK = "pose_hrnet_w32_256x192"
