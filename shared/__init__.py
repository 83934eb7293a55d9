"""Code shared by the three certflow services (one copy, used by all)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("certflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
