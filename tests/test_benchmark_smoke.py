"""benchmarks/pretrain_throughput.py: one run at the tiniest settings reports every figure, and
--write_readme replaces only the README's benchmark section."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, load_script

SCRIPT = os.path.join(REPO, "benchmarks", "pretrain_throughput.py")


def test_replace_section_keeps_everything_outside_the_markers():
    bench = load_script("benchmarks/pretrain_throughput.py")
    text = f"# title\nbefore\n{bench.START_MARKER}\nold table\n{bench.END_MARKER}\nafter\n"
    new = bench.replace_section(text, "| new | table |")
    assert new == f"# title\nbefore\n{bench.START_MARKER}\n| new | table |\n{bench.END_MARKER}\nafter\n"
    with pytest.raises(ValueError):
        bench.replace_section("no markers here", "x")
    with pytest.raises(ValueError):
        bench.replace_section(f"{bench.END_MARKER}\n{bench.START_MARKER}", "x")


def test_config_parsing():
    bench = load_script("benchmarks/pretrain_throughput.py")
    configs = bench.parse_configs("resnet18:32:128,resnet50:224:32:imagenet,resnet18:96x64:small,VGG16:64", 16)
    assert [(c["backbone"], c["size"], c["batch"], c["stem"]) for c in configs] == [
        ("resnet18", (32, 32), 128, None), ("resnet50", (224, 224), 32, "imagenet"),
        ("resnet18", (96, 64), 16, "small"), ("VGG16", (64, 64), 16, None)]
    for bad in ("resnet18", "resnet18:0", "resnet18:32:8:big", "VGG16:64:8:small"):
        with pytest.raises(ValueError):
            bench.parse_configs(bad, 16)


@pytest.mark.slow
def test_tiny_run_reports_every_figure_and_rewrites_only_its_readme_section(tmp_path):
    bench = load_script("benchmarks/pretrain_throughput.py")
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        original = f.read()
    readme = tmp_path / "README.md"
    readme.write_text(original, encoding="utf-8")
    results = tmp_path / "results.json"
    # One process per config (--isolation=config) keeps this under a minute; the default
    # (a process per measurement) runs the same worker code.
    completed = subprocess.run(
        [sys.executable, SCRIPT, "--configs", "resnet18:16:4", "--augment_on", "host,device", "--steps", "1",
         "--warmup_steps", "1", "--pipeline_batches", "1", "--pipeline_warmup", "1", "--repeats", "1",
         "--matmul_seconds", "0.05", "--num_images", "8", "--isolation", "config", "--json", str(results),
         "--write_readme", "--readme", str(readme)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(os.environ, CUDA_VISIBLE_DEVICES="-1"))
    assert completed.returncode == 0, (completed.stdout[-3000:], completed.stderr[-3000:])
    assert "CPU:" in completed.stdout and "| configuration | batch (views) |" in completed.stdout

    report = json.loads(results.read_text(encoding="utf-8"))
    machine = report["machine"]
    assert machine["cpu"]["model"] and isinstance(machine["cpu"]["bf16_features"], list)
    assert machine["tensorflow"] and machine["devices"] and machine["onednn"].split()[0] in ("on", "off")
    assert sorted(c["augment_on"] for c in report["configs"]) == ["device", "host"]
    for config in report["configs"]:
        summary = config["summary"]
        for key in ("input_pipeline_images_per_s",  # (a)
                    "training_step_images_per_s",  # (b)
                    "full_run_images_per_s",  # (c)
                    "host_cpu_s_per_image",  # (d)
                    "peak_rss_gb",  # (e)
                    "matmul_peak_flops_per_s", "share_of_matmul_peak"):  # (f)
            assert summary[key] is not None and summary[key]["median"] > 0, (config["name"], key, summary[key])
            assert summary[key]["min"] <= summary[key]["median"] <= summary[key]["max"]
        assert summary["step_flops_per_image"] > 0
        assert summary["peak_device_memory_gb"] is None  # no GPU in this test: no device memory figure
        assert not any(r.get("error") for r in config["results"])

    text = readme.read_text(encoding="utf-8")
    start, end = text.index(bench.START_MARKER), text.index(bench.END_MARKER)
    assert text[:start] == original[:original.index(bench.START_MARKER)]
    assert text[end:] == original[original.index(bench.END_MARKER):]
    section = text[start:end]
    assert "python benchmarks/pretrain_throughput.py --configs resnet18:16:4" in section
    assert section.count("| ResNet-18, 16x16") == 2 and "share of matmul peak" in section
    assert "Columns." in section and machine["tensorflow"] in section
