"""Checks the image builds run (`RUN python docker/check_build.py ...`): a build that would give an image unable to
run on the hardware it names fails here, loudly, instead of at the first kernel launch on a paid instance.

    python docker/check_build.py torch --cuda 12.6 --arch sm_70      # the torch wheel: its CUDA version, its kernels
    python docker/check_build.py portable-ops DIR                    # no AVX-512 code in DIR's compiled CPU ops

`torch.cuda.get_arch_list()` reads the architectures compiled into the wheel; it needs no GPU (a build has none).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def check_torch(cuda: str, archs: list[str]) -> list[str]:
    import torch

    problems = []
    built = ".".join((torch.version.cuda or "none").split(".")[:2])
    if built != cuda:
        problems.append(f"torch {torch.__version__} is built for CUDA {built}, the image for CUDA {cuda}")
    have = torch.cuda.get_arch_list()
    missing = [a for a in archs if a not in have]
    if missing:
        problems.append(
            f"torch {torch.__version__} has no kernels for {', '.join(missing)} (it has: {' '.join(have) or 'none'}); "
            "pick a CUDA build of torch that still ships them (Volta sm_70: CUDA 12.6 builds; CUDA 13 dropped it)"
        )
    return problems


def check_portable_ops(root: Path) -> list[str]:
    libs = sorted(p for p in root.rglob("*.so") if "cpu" in p.name or "adam" in p.name or "aio" in p.name)
    if not libs:
        return [f"no compiled DeepSpeed CPU ops under {root} (DS_BUILD_CPU_ADAM=1 did not build?)"]
    problems = []
    for lib in libs:
        code = subprocess.run(["objdump", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
        zmm = code.count("%zmm")
        if zmm:
            problems.append(f"{lib}: {zmm} AVX-512 instructions: it would stop with SIGILL on a Broadwell host (p3)")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="check", required=True)
    t = sub.add_parser("torch")
    t.add_argument("--cuda", required=True, help="major.minor of the base image's CUDA, e.g. 12.6")
    t.add_argument("--arch", action="append", required=True, help="e.g. sm_70 (repeatable)")
    o = sub.add_parser("portable-ops")
    o.add_argument("root", type=Path)
    a = p.parse_args(argv)
    problems = check_torch(a.cuda, a.arch) if a.check == "torch" else check_portable_ops(a.root)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"ok: {a.check}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
