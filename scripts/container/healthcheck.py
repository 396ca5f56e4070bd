"""Container healthcheck: exit 0 when the service answers GET /readyz with 200, 1 otherwise.

Standard library only (no curl in the image). Reads the same MONOSERVE_ settings as the service,
so a changed port or bind address needs no change here.
"""

import os
import sys
import urllib.request

host = os.environ.get("MONOSERVE_HOST", "127.0.0.1")
if host in ("", "0.0.0.0", "::", "[::]"):  # bound to every interface: ask over loopback
    host = "127.0.0.1"
port = os.environ.get("MONOSERVE_PORT", "8000")
url = f"http://{host}:{port}/readyz"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        status = response.status
except Exception as exc:  # noqa: BLE001 - any failure means unhealthy; say why in the health log
    print(f"{url}: {exc}")
    sys.exit(1)
print(f"{url}: {status}")
sys.exit(0 if status == 200 else 1)
