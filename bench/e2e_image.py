"""Image benchmark: build time and size of the project image and of the OpenBao image.

    .venv/bin/python -m bench.e2e_image

Prints one line per number. Builds from the local base (tests/support/images.py), as CI does.
"""

from __future__ import annotations

import time

from tests.support.e2e_images import build_project_image, image_size, remove_image
from tests.support.e2e_names import unique
from tests.support.images import ensure_base_image
from tests.support.openbao_image import build_openbao_image


def main() -> None:
    base = ensure_base_image()
    tag = f"certflow-bench:{unique('img')}"
    started = time.monotonic()
    build_project_image(tag, base=base)
    built = time.monotonic() - started
    try:
        size, base_size = image_size(tag), image_size(base)
        print(f"project image build (wheels + docker build): {built:.1f} s")
        print(
            f"project image size: {size / 1e6:.1f} MB (base {base_size / 1e6:.1f} MB, "
            f"certflow layers {(size - base_size) / 1e6:.1f} MB)"
        )
        bao = f"certflow-bench-vault:{unique('img')}"
        started = time.monotonic()
        build_openbao_image(bao, base=base)
        print(f"openbao image build: {time.monotonic() - started:.1f} s")
        try:
            print(f"openbao image size: {image_size(bao) / 1e6:.1f} MB")
        finally:
            remove_image(bao)
    finally:
        remove_image(tag)


if __name__ == "__main__":
    main()
