"""A real consumer of the certificate for the e2e tier and the lab: nginx from Debian's packages.

``ensure_consumer_image()`` returns ``certflow-test-consumer:<version>``: a debootstrap minbase
bookworm with nginx-light and openssl. Its command ``certflow-consumer`` writes an nginx
configuration that serves the pair mounted at /certs (``CERT_FILE``, ``KEY_FILE``) with TLS on
``PORT`` (8443), then runs nginx in the foreground as PID 1: a restart reads the pair again, and
so does a SIGHUP (nginx's reload). ``START_DELAY`` seconds pass before nginx starts. Built once
(~1 min), then reused; a file lock keeps parallel sessions from building it twice.
"""

from __future__ import annotations

import fcntl
import sys
import tempfile
from pathlib import Path

from tests.support.images import debootstrap_rootfs, image_exists, import_rootfs

# Bump the tag when the package list or the command changes, so stale images are not reused.
CONSUMER_IMAGE = "certflow-test-consumer:2"
COMMAND = "/usr/local/bin/certflow-consumer"
_LOCK = Path("/tmp/certflow-test-consumer.lock")
_PACKAGES = "nginx-light,openssl,ca-certificates"
_SCRIPT = r"""#!/bin/sh
# Serve the pair at /certs with TLS (tests only): nginx in the foreground, as PID 1.
set -eu
CERT_FILE="${CERT_FILE:-/certs/STAR.iklim.co.full.crt}"
KEY_FILE="${KEY_FILE:-/certs/STAR.iklim.co_key.pem}"
PORT="${PORT:-8443}"
# A slow start (seconds before nginx reads the pair and listens), for tests that act while a
# reloaded task is on its way back.
sleep "${START_DELAY:-0}"
cat > /tmp/nginx.conf <<EOF
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events {}
http {
  access_log off;
  server {
    listen ${PORT} ssl;
    ssl_certificate ${CERT_FILE};
    ssl_certificate_key ${KEY_FILE};
    location / { return 200 "ok\n"; }
  }
}
EOF
exec nginx -c /tmp/nginx.conf -g 'daemon off;'
"""


def ensure_consumer_image(name: str = CONSUMER_IMAGE) -> str:
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_exists(name):
            return name
        with tempfile.TemporaryDirectory(prefix="certflow-consumer-rootfs-") as tmp:
            rootfs = debootstrap_rootfs(Path(tmp) / "rootfs", _PACKAGES, what="consumer image")
            script = rootfs / COMMAND.lstrip("/")
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(_SCRIPT)
            script.chmod(0o755)
            import_rootfs(rootfs, name, what="consumer image")
        return name


if __name__ == "__main__":
    print(ensure_consumer_image(*sys.argv[1:2]))
