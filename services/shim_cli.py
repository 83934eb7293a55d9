"""``certflow shim``: print a small ``certflow`` command for a swarm host that has only Docker.

The printed script runs the certflow image with the Docker socket, so on a manager
``certflow status`` and ``certflow verify`` are one short command without Python on the host;
they then start their own one-off container on the Vault network (``services.verify.launch``).
Install it with::

    docker run --rm certflow:latest shim > /usr/local/bin/certflow
    chmod 755 /usr/local/bin/certflow
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")

_SCRIPT = """#!/bin/sh
# certflow on this host, through Docker (written by `certflow shim`; run it again to update).
# CERTFLOW_IMAGE picks another image; DOCKER_SOCKET another engine socket.
set -e
image="${{CERTFLOW_IMAGE:-{image}}}"
socket="${{DOCKER_SOCKET:-/var/run/docker.sock}}"
tty=""
[ -t 0 ] && [ -t 1 ] && tty="-t"
exec docker run --rm -i $tty --user 0:0 \\
  -v "$socket:/var/run/docker.sock" \\
  $(env | sed -n 's/^\\(\\(VERIFY\\|CERTFLOW\\|LOG\\)_[A-Z0-9_]*\\)=.*/-e \\1/p') \\
  "$image" "$@"
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Install: docker run --rm certflow:latest shim > /usr/local/bin/certflow && "
        "chmod 755 /usr/local/bin/certflow. Exit codes: 0 printed, 2 bad image name."
    )
    parser.add_argument(
        "--image",
        help="the image the command runs (default: $CERTFLOW_IMAGE, else certflow:latest)",
    )


def script(image: str) -> str:
    return _SCRIPT.format(image=image)


def run(args: argparse.Namespace) -> int:
    image = args.image or os.environ.get("CERTFLOW_IMAGE") or "certflow:latest"
    if not _IMAGE.match(image):
        print(f"certflow shim: --image {shlex.quote(image)} is not an image name", file=sys.stderr)
        return 2
    sys.stdout.write(script(image))
    return 0
