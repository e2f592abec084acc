"""One module per `hrpose` subcommand.

Each module defines ``add_arguments(parser)`` and ``run(args) -> int``. The CLI imports a module only
when its subcommand is used, so `hrpose summary` does not pay for onnxruntime or cv2 video code.
"""
