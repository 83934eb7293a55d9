"""Image benchmark: build time and size of the project image (and the Vault double's, if present).

    .venv/bin/python -m bench.e2e_image

Prints one line per number. Builds from the local base (tests/support/images.py), as CI does.
"""

from __future__ import annotations

import time

from tests.support.e2e_images import (
    ROOT,
    build_project_image,
    build_vaultsim_image,
    image_size,
    remove_image,
)
from tests.support.e2e_names import unique
from tests.support.images import ensure_base_image


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
        if (ROOT / "tests" / "vaultsim").is_dir():
            sim = f"certflow-bench-vault:{unique('img')}"
            build_vaultsim_image(sim, project_image=tag)
            try:
                print(f"vault double image size: {image_size(sim) / 1e6:.1f} MB")
            finally:
                remove_image(sim)
    finally:
        remove_image(tag)


if __name__ == "__main__":
    main()
