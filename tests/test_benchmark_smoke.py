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

    # The raw results alone rewrite the same section (--render_json), and into a named section.
    rendered = tmp_path / "README_rendered.md"
    named_start, named_end = bench.section_markers("again")
    rendered.write_text(f"{original}\n{named_start}\n{named_end}\n", encoding="utf-8")
    assert bench.main(["--render_json", str(results), "--readme", str(rendered)]) == 0
    again = rendered.read_text(encoding="utf-8")
    assert again[again.index(bench.START_MARKER):again.index(bench.END_MARKER)] == section
    bench.render_report(str(results), str(rendered), "again")
    again = rendered.read_text(encoding="utf-8")
    named = again[again.index(named_start):again.index(named_end)]
    assert section.split("| configuration |")[1].split("\n\n")[0] in named and "Columns as in" in named


def _args(bench, *argv):
    return bench.parse_args(["--configs", "resnet18:32:128,resnet50:224:32,VGG16:64:8", *argv])


def test_pytorch_references_follow_the_configs_they_can_run(tmp_path):
    bench = load_script("benchmarks/pretrain_throughput.py")
    python = tmp_path / "python"
    python.write_text("", encoding="utf-8")
    args = _args(bench, "--precisions", "float32,mixed_float16", "--augment_on", "host,device",
                 "--torch_python", str(python))
    references = [c for c in args.combos if c.get("torch")]
    # One per (backbone, size, batch, stem, precision) of a ResNet at a precision torch_step.py has: the
    # VGG16 config and mixed_float16 get none, host and device share one.
    assert [(c["backbone"], c["size"], c["precision"]) for c in references] == [
        ("resnet18", (32, 32), "float32"), ("resnet50", (224, 224), "float32")]
    assert references[0]["torch_args"] == ["--backbone", "resnet18", "--size", "32", "--batch", "128",
                                           "--precision", "float32"]
    kinds, jobs = bench.plan(args.combos, args)
    torch_jobs = [(repeat, job_kinds) for repeat, job_kinds, _, runner in jobs if runner.get("torch")]
    assert torch_jobs == [(r, ["step"]) for r in range(args.repeats) for _ in references]
    # Each reference runs right after the project's own steps, in every repeat (interleaved).
    names = [runner["name"] for repeat, job_kinds, _, runner in jobs if repeat == 0 and job_kinds == ["step"]]
    assert names[-2:] == [c["name"] for c in references] and len(names) == 3 * 2 * 2 + 2
    assert not any(c.get("torch") for _, job_kinds, group, _ in jobs if job_kinds == ["pipeline"] for c in group)
    assert "torch_python" not in _args(bench).combos[0] and not any(c.get("torch") for c in _args(bench).combos)


def test_multi_worker_rows_and_named_readme_sections(tmp_path):
    bench = load_script("benchmarks/pretrain_throughput.py")
    args = _args(bench, "--strategy", "one_device,multi_worker", "--workers", "3")
    assert sorted({c["strategy"] for c in args.combos}) == ["multi_worker", "one_device"]
    assert all("--strategy=multi_worker" in c["cli_flags"] for c in args.combos if c["strategy"] == "multi_worker")
    ports = bench.free_ports(3)
    assert len(set(ports)) == 3 and all(0 < p < 65536 for p in ports)
    with pytest.raises(SystemExit):
        _args(bench, "--workers", "1")
    with pytest.raises(SystemExit):
        _args(bench, "--section", "a b")
    start, end = bench.section_markers("precision")
    assert (start, end) == ("<!-- benchmark:precision:start -->", "<!-- benchmark:precision:end -->")
    assert bench.section_markers("") == (bench.START_MARKER, bench.END_MARKER)
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{bench.START_MARKER}\nmain\n{bench.END_MARKER}\n{start}\nold\n{end}\nb\n", encoding="utf-8")
    bench.write_readme(str(readme), "new", (start, end))
    assert readme.read_text(encoding="utf-8") == \
        f"a\n{bench.START_MARKER}\nmain\n{bench.END_MARKER}\n{start}\nnew\n{end}\nb\n"


def test_pytorch_and_multi_worker_rows_are_labelled(tmp_path):
    bench = load_script("benchmarks/pretrain_throughput.py")
    python = tmp_path / "python"
    python.write_text("", encoding="utf-8")
    args = bench.parse_args(["--configs", "resnet18:32:128", "--strategy", "multi_worker", "--torch_python",
                             str(python), "--repeats", "1"])
    worker, reference = args.combos
    step = {"images_per_s": 20.0, "peak_rss_gb": 1.0, "cpu_s_per_image": 0.1}
    worker["results"] = [{"step": step, "workers": [{"step": step}, {"step": step}],
                          "distribution": {"replicas": 2, "jit_compile": False,
                                           "devices": ["/job:worker/replica:0/task:0/device:CPU:0"]}}]
    reference["results"] = [{"step": dict(step, images_per_s=25.0),
                             "torch": {"torch": "2.13.0+cpu", "compiled": True, "device": "cpu", "threads": 2}}]
    for combo in (worker, reference):
        combo["runs"] = {kind: [None] for kind in bench.KINDS}
        combo["runs"]["step"] = [combo["results"][0]["step"]]
        combo["summary"] = bench.summarise(combo)
    rows = bench.table_rows([worker, reference])
    assert "multi_worker, 2 worker processes on localhost, 2 replicas" in rows[2] and "| 20.0 |" in rows[2]
    assert rows[3].startswith("| PyTorch 2.13.0+cpu (torch.compile), the same training step: ResNet-18, 32x32, "
                              "small stem; float32") and "| 25.0 |" in rows[3]
