"""Build the Unicorn core softkvm runs on and install it into this Python environment.

Unicorn 2.1.4's source distribution from PyPI (pinned by its hash), with ``softkvm.patch``
applied, built for AArch64 only, installed as ``unicorn 2.1.4+softkvm.6`` (which still satisfies
softkvm's ``unicorn==2.1.4``). Why the patch: README.md beside this file.

Run with the interpreter of the environment to install into::

    .venv/bin/python third_party/unicorn/build.py [WORKDIR]

It needs a C compiler, make and cmake (``pip install cmake`` is enough); it downloads only from
the package index pip is configured with.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "2.1.4"
LOCAL_LABEL = "softkvm.6"
SDIST = f"unicorn-{VERSION}.tar.gz"
SDIST_SHA256 = "00567a70e323f749b419cd86bee4f9115beab7ebba32194581c090cbb7c59cff"
HERE = Path(__file__).resolve().parent
PATCH = HERE / "softkvm.patch"
LIBRARY = "libunicorn.so.2"


class BuildError(RuntimeError):
    pass


def run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def fetch(workdir: Path) -> Path:
    archive = workdir / SDIST
    if not archive.exists():
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", "--dest", str(workdir), f"unicorn=={VERSION}"])
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        archive.unlink()
        raise BuildError(f"{SDIST}: sha256 {digest}, expected {SDIST_SHA256}; removed it, "
                         "run again to download it afresh")
    return archive


def unpack(archive: Path, workdir: Path) -> Path:
    tree = workdir / f"unicorn-{VERSION}"
    shutil.rmtree(tree, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    run(["git", "apply", "-p1", str(PATCH)], cwd=tree)
    # git apply skips paths it takes to be outside the working directory without failing:
    # check that the patch really landed.
    if "UC_CTL_INVALIDATE_PHYS" not in (tree / "src/include/unicorn/unicorn.h").read_text():
        raise BuildError(f"{PATCH.name} did not apply to {tree}: apply it by hand and rerun")
    info = tree / "PKG-INFO"  # setuptools-scm takes the version from here in an sdist
    text = info.read_text()
    info.write_text(text.replace(f"\nVersion: {VERSION}\n",
                                 f"\nVersion: {VERSION}+{LOCAL_LABEL}\n", 1))
    return tree


def cmake() -> str:
    beside = Path(sys.executable).parent / "cmake"
    found = str(beside) if beside.exists() else shutil.which("cmake")
    if found is None:
        raise BuildError("cmake not found: `python -m pip install cmake` into this environment")
    return found


def compile_library(tree: Path) -> None:
    """AArch64 only: the library setup.py would build carries all ten targets."""
    build = tree / "build-aarch64"
    run([cmake(), "-S", str(tree / "src"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
         "-DUNICORN_BUILD_TESTS=off", "-DUNICORN_ARCH=aarch64"])
    run([cmake(), "--build", str(build), f"-j{os.cpu_count() or 2}"])
    # setup.py packages a library found in prebuilt/ instead of building its own.
    shutil.copy(build / LIBRARY, tree / "prebuilt" / LIBRARY)


def main(argv: list[str]) -> int:
    workdir = Path(argv[1]) if len(argv) > 1 else Path("build/unicorn")
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        tree = unpack(fetch(workdir), workdir)
        compile_library(tree)
        run([sys.executable, "-m", "pip", "install", "--quiet", "--force-reinstall",
             "--no-deps", str(tree)])
    except (BuildError, subprocess.CalledProcessError, OSError) as err:
        print(f"build.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
