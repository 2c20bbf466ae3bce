"""A non-editable install carries everything a user needs: the presets, the zoo, the command."""

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_wheel_installed_into_a_fresh_venv_maps_and_simulates(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies come from this environment's site-packages (a plain path, so its editable-install hook
    # for eventllm is not run): eventllm itself must come from the wheel
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    str(ROOT)], check=True, cwd=tmp_path, timeout=600)
    where = subprocess.run([str(py), "-c", "import eventllm, mapping, sim; print(eventllm.__file__, mapping.__file__, sim.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert str(ROOT) not in where and site in where  # the installed copy, not this checkout
    cli = [str(venv / "bin" / "eventllm")]
    run = lambda *a: subprocess.run([*cli, *a], capture_output=True, text=True, cwd=tmp_path, timeout=600)  # noqa: E731
    r = run("build", "--model", "zoo:rwkv4-tiny", "-o", "graph")
    assert r.returncode == 0, r.stderr
    r = run("map", "graph", "--topology", "seneca", "-o", "mapping.json", "--no-heatmap")
    assert r.returncode == 0, r.stderr
    r = run("simulate", "graph", "--mapping", "mapping.json", "--max-tokens", "4", "--json", "sim.json", "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sim.json").exists()
    # the demo from a folder with no data beside it: the held-out text ships inside the package
    r = run("demo", "--model", "zoo:rwkv4-tiny", "--baseline", "zoo:rwkv4-tiny", "--tokens", "128", "--max-tokens", "4",
            "-o", "demo", "-q")
    assert r.returncode == 0, r.stderr
    assert "paper's method" in r.stdout and (tmp_path / "demo" / "demo.json").exists()
    assert not (tmp_path.parent / "shared").exists()
