"""`hrpose serve`: pose estimation over HTTP (FastAPI + uvicorn, `pip install 'hrpose[serve]'`) and a web page.

`create_app(estimator, ServeSettings(...))` builds the ASGI app (see `hrpose.serve.app` for the endpoints
and the answer schema); `hrpose.commands.serve` runs it with uvicorn on 127.0.0.1 by default.
"""

from hrpose.serve.app import SCHEMA_VERSION, ServeSettings, create_app

__all__ = ["SCHEMA_VERSION", "ServeSettings", "create_app"]
