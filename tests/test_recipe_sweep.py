"""benchmarks/recipe_sweep.py: grid parsing, and a tiny sweep (2 points, 1 epoch, 16 images of 32 px)
that is killed after its first point and finished by a second invocation, which skips that point."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, load_script

SCRIPT = os.path.join(REPO, "benchmarks", "recipe_sweep.py")


def test_grid_parsing_and_points():
    sweep = load_script("benchmarks/recipe_sweep.py")
    grid = sweep.parse_grid("temperature=0.1,0.2 --strength=0.5,1.0", known_flags={"temperature", "strength"})
    assert grid == [("temperature", ["0.1", "0.2"]), ("strength", ["0.5", "1.0"])]
    points = sweep.grid_points(grid)
    assert points[:2] == [{"temperature": "0.1", "strength": "0.5"}, {"temperature": "0.1", "strength": "1.0"}]
    assert len(points) == 4
    assert sweep.point_name(points[0]) == "temperature-0.1_strength-0.5"
    for bad in ("", "temperature", "temperature=", "temprature=0.1", "num_epochs=1,2", "temperature=1 temperature=2"):
        with pytest.raises(ValueError):
            sweep.parse_grid(bad, known_flags={"temperature", "strength", "num_epochs"})


def _sweep_command(demo_data, tmp_path):
    # 16 images, absolute paths: a list of its own beside nothing else.
    folder = os.path.dirname(demo_data.unlabeled)
    with open(demo_data.unlabeled, encoding="utf-8") as f:
        images = [os.path.join(folder, line.strip()) for line in f if line.strip()][:16]
    images_list = tmp_path / "sixteen.txt"
    images_list.write_text("\n".join(images) + "\n", encoding="utf-8")
    return [sys.executable, SCRIPT, f"--train_file_path={images_list}", f"--probe_train_file_path={demo_data.train}",
            f"--probe_val_file_path={demo_data.val}", "--grid", "temperature=0.2,0.5", "--num_epochs=1",
            f"--out={tmp_path / 'sweep'}", "--write_readme", f"--readme={tmp_path / 'README.md'}",
            "--", "--input_size=32 32", "--batch_size=8", "--seed=0", "--knn_every=0", "--diagnostics_every=0"]


@pytest.mark.slow
def test_a_killed_sweep_continues_where_it_stopped_and_writes_table_plot_json_and_readme(demo_data, tmp_path):
    command = _sweep_command(demo_data, tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# title\n<!-- recipe-sweep:start -->\nold\n<!-- recipe-sweep:end -->\nafter\n", encoding="utf-8")
    out = tmp_path / "sweep"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")

    # First invocation: killed (with its main.py child) as soon as the first point is recorded.
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             start_new_session=True)
    deadline = time.time() + 600
    results_path = out / "sweep.json"
    while time.time() < deadline and first.poll() is None:
        if results_path.exists() and json.loads(results_path.read_text())["points"]:
            break
        time.sleep(0.5)
    assert first.poll() is None, first.communicate()[0][-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert list(json.loads(results_path.read_text())["points"]) == ["temperature-0.2"]

    # Second invocation: the first point is skipped, the rest runs, the report is written.
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, (second.stdout[-3000:], second.stderr[-3000:])
    assert "temperature-0.2: finished earlier, skipped" in second.stdout
    assert "temperature-0.5: pretrain" in second.stdout and "temperature-0.2: pretrain" not in second.stdout
    results = json.loads(results_path.read_text())
    assert results["order"] == ["temperature-0.2", "temperature-0.5", "random_init"]
    for name in results["order"]:
        entry = results["points"][name]
        assert [r["fraction"] for r in entry["probe"]] == [1.0]
        assert 0.0 <= entry["probe"][0]["accuracy_mean"] <= 1.0
    assert results["points"]["temperature-0.5"]["flags"] == {"temperature": "0.5"}
    assert "loss" in results["points"]["temperature-0.5"]["last_epoch"]
    assert (out / "sweep.png").stat().st_size > 0
    table = (out / "sweep.md").read_text()
    assert "| encoder | `--temperature` |" in table and "random init" in table
    text = readme.read_text()
    assert text.startswith("# title\n<!-- recipe-sweep:start -->\n```bash\npython benchmarks/recipe_sweep.py")
    assert table.strip() in text and "old" not in text and text.endswith("<!-- recipe-sweep:end -->\nafter\n")

    # A third invocation has nothing left to run.
    third = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert third.returncode == 0 and third.stdout.count("finished earlier, skipped") == 3, third.stdout[-2000:]
