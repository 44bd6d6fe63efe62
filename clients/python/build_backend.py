"""setuptools' build backend, run in a copy of this folder.

pip builds a local folder in place, and setuptools leaves build/ and *.egg-info where it
builds; a stale build/lib would even put stubs deleted since into the next wheel. So the
hooks that run setuptools run it in a temporary copy, and `pip install ./clients/python`
leaves this folder as it found it. Editable installs are setuptools' own: they point here.
"""
import functools
import os
import shutil
import tempfile

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F401,F403 (the editable hooks, unchanged)


def _in_copy(hook):
    @functools.wraps(hook)
    def run(*args, **kwargs):
        here = os.getcwd()
        # The folders the frontend names (wheel, sdist, metadata) stay where it means them.
        args = [os.path.join(here, a) if isinstance(a, str) else a for a in args]
        kwargs = {k: os.path.join(here, v) if k.endswith("_directory") and isinstance(v, str) else v for k, v in kwargs.items()}
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "src")
            shutil.copytree(here, copy, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
            os.chdir(copy)
            try:
                return hook(*args, **kwargs)
            finally:
                os.chdir(here)

    return run


get_requires_for_build_wheel = _in_copy(build_meta.get_requires_for_build_wheel)
get_requires_for_build_sdist = _in_copy(build_meta.get_requires_for_build_sdist)
prepare_metadata_for_build_wheel = _in_copy(build_meta.prepare_metadata_for_build_wheel)
build_wheel = _in_copy(build_meta.build_wheel)
build_sdist = _in_copy(build_meta.build_sdist)
