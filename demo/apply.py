"""Apply a YAML stream of documents to xds-server (the one-shot `apply` container of compose).

    python demo/apply.py http://xds-server:8080 api/examples/demo.yaml [--timeout 60]

Waits until ``/readyz`` answers 200, then ``POST /v1/apply`` with the file as
``application/yaml`` (one transaction). Exit 0 on a 2xx answer; 1 if the server rejects the
documents (the problem is printed) or is not ready in time. Standard library only.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

#: Never through an HTTP proxy from the environment: the server is on the local network.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(url: str, data: bytes | None = None, content_type: str = "") -> tuple[int, str]:
    headers = {"content-type": content_type} if content_type else {}
    request = urllib.request.Request(url, data, headers, method="POST" if data else "GET")
    try:
        with _OPENER.open(request, timeout=10) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def wait_ready(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            status, body = call(base + "/readyz")
            if status == 200:
                return
            last = f"{status} {body.strip()}"
        except OSError as error:
            last = str(error)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base}/readyz not ready after {timeout:g}s: {last}")
        time.sleep(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="POST a YAML stream to xds-server /v1/apply")
    parser.add_argument("url", help="xds-server admin URL, e.g. http://xds-server:8080")
    parser.add_argument("file", type=Path, help="YAML stream of {kind, name, spec} documents")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for ready")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    try:
        wait_ready(base, args.timeout)
        status, body = call(base + "/v1/apply", args.file.read_bytes(), "application/yaml")
    except (OSError, TimeoutError) as error:
        print(f"apply: {error}", file=sys.stderr)
        return 1
    if not 200 <= status < 300:
        print(f"apply: {args.file} rejected ({status}):\n{body}", file=sys.stderr)
        return 1
    print(f"apply: {args.file} applied ({status}): {body.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
