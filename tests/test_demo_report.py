"""scripts/demo_report.py: the demo writes report.md into its output folder and leaves the checkout
alone; --update_readme (the maintainers' step) rewrites README's demo-results section and media/."""
import json
import os
import re
import subprocess
import sys

from conftest import REPO

SCRIPT = os.path.join(REPO, "scripts", "demo_report.py")


def _fake_results(root):
    """The files of a demo run that the report reads (two figures, one probe pair, a history)."""
    for folder in ("pretrain", "random_init", "embed"):
        os.makedirs(root / folder)
    (root / "pretrain" / "history.csv").write_text(
        "epoch,loss,contrastive_accuracy,images_per_second,seconds,knn_accuracy\n"
        "1,5.0,0.1,100,60,0.3\n2,4.0,0.2,200,30,0.4\n")
    probe = {"feature_layer": "h", "val_images": 20, "train_images": 40, "num_classes": 4, "repeats": 3,
             "results": [{"fraction": 1.0, "num_train": 40, "accuracy_mean": 0.5, "accuracy_std": 0.0}]}
    (root / "pretrain" / "linear_eval.json").write_text(json.dumps(probe))
    probe["results"][0]["accuracy_mean"] = 0.3
    (root / "random_init" / "linear_eval.json").write_text(json.dumps(probe))
    (root / "pretrain" / "loss.png").write_bytes(b"png-1")
    (root / "embed" / "tsne.png").write_bytes(b"png-2")


def _run(*args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_report_goes_into_the_results_folder_with_relative_links(tmp_path):
    results = tmp_path / "logs" / "demo"
    _fake_results(results)
    result = _run("--results", "logs/demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = (results / "report.md").read_text()
    assert "| 100% | 40 | 30.0 +- 0.0% | 50.0 +- 0.0% | +20.0 points |" in report
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert links == ["pretrain/loss.png", "embed/tsne.png"]
    assert all((results / link).is_file() for link in links)  # relative to report.md
    assert sorted(os.listdir(tmp_path)) == ["logs"]  # no README.md, no media/ written
    assert str(results / "report.md") in result.stdout or "logs/demo/report.md" in result.stdout


def test_update_readme_rewrites_the_marked_section_and_media(tmp_path):
    results = tmp_path / "demo"
    _fake_results(results)
    readme = tmp_path / "README.md"
    readme.write_text("# title\n<!-- demo-results:start -->\nold\n<!-- demo-results:end -->\ntail\n")
    result = _run("--results", "demo", "--update_readme", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert "old" not in text and text.startswith("# title\n<!-- demo-results:start -->\nMade by") and text.endswith(
        "<!-- demo-results:end -->\ntail\n")
    assert "![Pretraining loss and contrastive accuracy](media/pretrain_loss.png)" in text
    assert (tmp_path / "media" / "tsne.png").read_bytes() == b"png-2"
    assert not (results / "report.md").exists()
