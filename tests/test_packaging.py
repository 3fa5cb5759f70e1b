"""The installed distribution: our top-level packages are the ones Python imports, and nothing else claims them.

`train`, `serve` and `eval` are top-level names users asked for. `eval` is also a builtin function: the
package is imported as `from eval.rouge import ...`, which leaves the builtin alone, and no other
installed distribution may ship a package of the same name.
"""

import builtins
import importlib.metadata
import json
import shutil
import subprocess
import sys
import zipfile

from tests.conftest import ROOT

PACKAGES = ("radreport", "train", "serve", "eval")


def test_no_other_distribution_ships_our_top_level_names():
    owners = importlib.metadata.packages_distributions()
    for name in PACKAGES:
        assert set(owners.get(name, [])) == {"radiology-impressions"}, (name, owners.get(name))


def test_built_wheel_imports_as_ours_from_anywhere(tmp_path):
    src = tmp_path / "src"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md", *PACKAGES):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path],
        check=True,
    )
    (wheel,) = tmp_path.glob("radiology_impressions-*.whl")
    with zipfile.ZipFile(wheel) as z:
        top = {n.split("/")[0] for n in z.namelist() if not n.split("/")[0].endswith(".dist-info")}
        z.extractall(tmp_path / "site")
    assert top == set(PACKAGES)  # no tests/, bench/ or data/ in the distribution
    probe = (
        "import json, sys\n"
        "from eval.rouge import Rouge\n"
        "from eval.labeler import label\n"  # its vocabulary, eval/phrases.yaml, is package data
        "import eval, train, serve, radreport\n"
        "print(json.dumps({'files': [m.__file__ for m in (eval, train, serve, radreport)], "
        "'score': Rouge().score('No effusion.', 'No effusion.')['rouge1'], "
        "'effusion': label('Small left pleural effusion.')['Pleural Effusion']}))\n"
    )
    run = tmp_path / "elsewhere"
    run.mkdir()
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {probe}"],
        cwd=run,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    assert all(f.startswith(str(tmp_path / "site")) for f in result["files"]), result["files"]
    assert result["score"] == 1.0 and result["effusion"] == "positive"
    assert builtins.eval("1 + 1") == 2  # importing the package never touched the builtin
