"""`hrpose serve`: the pose API and the web page over HTTP (see `hrpose.serve.app` for the endpoints).

    hrpose serve                                   # the default zoo model on http://127.0.0.1:8000
    hrpose serve --model NAME --port 8080
    hrpose serve --cfg exp.yaml --weights model.pth --detector hog

Binds 127.0.0.1 unless --host says otherwise (the API has no authentication: put it behind your own proxy
before exposing it). Needs the serve extra: pip install 'hrpose[serve]'.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import signal
import sys
import threading
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..runtime import backend_names  # at call time: `hrpose --help` starts without torch

    parser.add_argument("--model", default=None, metavar="NAME",
                        help="a model zoo pose model (`hrpose models` lists them); the default when neither --cfg "
                             "nor --weights is given: hrnet-w32-coco-256x192")  # fmt: skip
    parser.add_argument("--cfg", default=None, help="experiment config (YAML); default: the one in --weights")
    parser.add_argument("--weights", default=None, help="model checkpoint (.pth/.safetensors; .onnx with "
                                                        "--backend onnxruntime)")  # fmt: skip
    parser.add_argument("--random-weights", action="store_true", help="serve the untrained network (testing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--backend", default="auto", choices=backend_names(),
                        help="inference backend as in `hrpose predict` (default auto: the fastest with fp32 "
                             "keypoints on this machine, see `hrpose info`)")  # fmt: skip
    parser.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16", "int8"),
                        help="as in `hrpose predict`: int8 runs an OpenVINO int8 IR (--weights model.xml) or "
                        "quantises the checkpoint on first use from --int8-calib")  # fmt: skip
    from hrpose.commands.predict import add_int8_arguments

    add_int8_arguments(parser)
    parser.add_argument("--detector", default="auto",
                        help="person boxes when a request gives none: auto (the zoo's YOLOX; HOG when it cannot be "
                             "had), hog, whole, onnx:MODEL.onnx")  # fmt: skip
    parser.add_argument("--det-thr", type=float, default=None, help="the detector's score threshold, 0..1")
    parser.add_argument("--no-flip", action="store_true", help="skip the flip test (twice as fast)")
    parser.add_argument("--batch-size", type=int, default=16, help="person crops per forward pass")
    parser.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body, MiB (default 20)")
    parser.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                        help="refuse images whose header declares more pixels (default $HRPOSE_MAX_IMAGE_PIXELS "
                             "or 100000000)")  # fmt: skip
    parser.add_argument(
        "--queue-size",
        type=int,
        default=16,
        help="requests that may wait for the model; more get 503 + Retry-After (default 16)",
    )
    parser.add_argument("--max-batch", type=int, default=8, help="requests run together in one go (default 8)")
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long the worker waits for more requests to batch (default 5 ms)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request gets 504 (default 30)")
    parser.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                        help="seconds a connection has to send its request headers; slower ones are closed "
                             "(default 10)")  # fmt: skip
    parser.add_argument("--max-connections", type=int, default=1024, metavar="N",
                        help="open connections at most; past it the oldest one still sending headers is "
                             "dropped (default 1024)")  # fmt: skip
    parser.add_argument("--test-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: a slow model


def run(args: argparse.Namespace) -> int:
    from hrpose.errors import UserError
    from hrpose.inference.detectors import DetectorError

    try:
        for pkg in ("fastapi", "uvicorn"):
            if importlib.util.find_spec(pkg) is None:
                raise UserError(f"hrpose serve needs {pkg}: pip install 'hrpose[serve]'")
        for opt, value in (("--queue-size", args.queue_size), ("--max-batch", args.max_batch)):
            if value < 1:
                raise UserError(f"{opt} must be >= 1, got {value}")
        if not 0 <= args.port <= 65535:
            raise UserError(f"--port must be from 0 (any free port) to 65535, got {args.port}")
        for opt, num, low in (
            ("--max-body-mb", args.max_body_mb, 0.0),
            ("--timeout", args.timeout, 0.0),
            ("--header-timeout", args.header_timeout, 0.0),
            ("--batch-wait-ms", args.batch_wait_ms, -1),
        ):
            if not (math.isfinite(num) and (num > 0 if low == 0 else num >= 0)):  # nan, inf, 1e400 refused
                raise UserError(f"{opt} must be a finite number {'>= 0' if low < 0 else '> 0'}, got {num}")
        if args.max_connections < 8:
            raise UserError(f"--max-connections must be >= 8, got {args.max_connections}")
        if args.detector.lower().startswith("file:"):
            raise UserError("--detector file:... looks boxes up by file name, which uploads do not have: use auto, "
                            "hog, whole or onnx:MODEL.onnx, or send boxes with each request")  # fmt: skip
        from hrpose.commands.predict import build_estimator

        estimator = build_estimator(args)
    except (UserError, DetectorError, ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import uvicorn

    from hrpose.serve import ServeSettings, create_app
    from hrpose.serve.protocol import guarded_protocol
    from hrpose.zoo import DEFAULT_POSE_MODEL

    if args.model is None and args.cfg is None and args.weights is None:
        name = DEFAULT_POSE_MODEL
    else:
        name = args.model or Path(args.weights or args.cfg).stem
    settings = ServeSettings(
        model_name=name, detector=args.detector, max_body_bytes=int(args.max_body_mb * 2**20),
        max_pixels=args.max_image_pixels, queue_size=args.queue_size, max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms, timeout_s=args.timeout, delay_s=args.test_delay_ms / 1000.0,
    )  # fmt: skip
    app = create_app(estimator, settings)
    print(f"hrpose serve: {name} on http://{args.host}:{args.port}/ (API: POST /v1/pose, GET /v1/models, "
          "/healthz, /openapi.json); Ctrl-C stops", file=sys.stderr, flush=True)  # fmt: skip
    # the app refuses pose requests past admitted_requests() before reading their body (503 + Retry-After);
    # connections are bounded by the protocol (header timeout, --max-connections), not by uvicorn's
    # limit_concurrency, which counts half-open connections too and would answer 503 to /healthz
    protocol = guarded_protocol(args.header_timeout, args.max_connections)

    class _Terminated(Exception):
        pass

    def _on_sigterm(signum: int, frame: object) -> None:
        raise _Terminated

    # uvicorn catches SIGINT/SIGTERM itself, shuts down gracefully, then re-raises the signal to the handler
    # that was there before: ours turns SIGTERM into a clean exit instead of death by signal
    main_thread = threading.current_thread() is threading.main_thread()  # (tests run it in a thread)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    how = "stopped"
    try:
        uvicorn.run(app, host=args.host, port=args.port, http=protocol, limit_concurrency=None,
                    timeout_keep_alive=5, timeout_graceful_shutdown=max(5.0, min(args.timeout, 30.0)),
                    log_level="warning")  # fmt: skip
    except KeyboardInterrupt:
        how = "stopped (Ctrl-C)"
    except _Terminated:
        how = "stopped (SIGTERM)"
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    print(f"hrpose serve: {how}", file=sys.stderr, flush=True)
    return 0
