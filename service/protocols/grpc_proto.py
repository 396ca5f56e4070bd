"""The Open Inference Protocol's gRPC messages, generated from service/oip_v2.proto by grpcio-tools.

Generated when first asked for (`messages()`: once per process, when the gRPC server starts), not
at install time and never committed. Why at first use:
- one path for every way the project is installed: an editable install (`make install`), the
  wheel in the container, a fresh clone: no setuptools build hook (they are not run the same way
  by editable installs), no generated file to go stale against the .proto beside it;
- it writes only into a temporary directory, deleted at once: the container's root filesystem is
  read-only and its site-packages is not the service user's;
- it costs about 0.1 s once, at server start (protoc is compiled into grpcio-tools' wheel; no
  system protoc is needed).

The proto's package is monoserve's own (monoserve.oip.v2), so importing tritonclient.grpc or
KServe's modules in the same process (package "inference") registers nothing twice in protobuf's
default descriptor pool; the service keeps the protocol's name on the wire (`SERVICE_NAME`).
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

PROTO = "oip_v2.proto"
MODULE = "service.protocols.oip_v2_pb2"  # the generated module's name in sys.modules
SERVICE_NAME = "inference.GRPCInferenceService"  # what clients call (Triton's, KServe's)
PROTO_SERVICE = "GRPCInferenceService"  # its name in oip_v2.proto


@functools.lru_cache(maxsize=1)
def messages() -> ModuleType:
    """The generated module (message classes and the file's DESCRIPTOR); generated on first call."""
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    from grpc_tools import protoc

    proto_include = str(importlib.resources.files("grpc_tools") / "_proto")  # google/protobuf/*.proto
    source = importlib.resources.files("service.protocols") / PROTO
    with importlib.resources.as_file(source) as proto_path, tempfile.TemporaryDirectory(prefix="monoserve-proto-") as out:
        status = protoc.main(["grpc_tools.protoc", f"-I{proto_path.parent}", f"-I{proto_include}",
                              f"--python_out={out}", str(proto_path)])
        if status != 0:
            raise RuntimeError(f"grpcio-tools could not compile {proto_path} (protoc exit status {status})")
        generated = Path(out) / (Path(PROTO).stem + "_pb2.py")
        spec = importlib.util.spec_from_file_location(MODULE, generated)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[MODULE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[MODULE]
            raise
    return module
