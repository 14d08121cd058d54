"""Run folders under hostile conditions (issue 9, items 4-8): damaged checkpoints, copied folders, two runs
at once, unwritable output folders, a damaged encoder when starting over.

Most tests work on copies of one tiny finished fine-tuning run made in-process (2 epochs of 16 images
at 16 px, frozen random encoder); one subprocess checks exit status 2 without a traceback end to end.
"""
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import types

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, assert_user_error, run_main
from conftest import parsed as parsed_flags
from simclr_tf.errors import UserError
from simclr_tf.training import callbacks as cb
from tasks import classification, embed, evaluate, linear_eval, locking, predict, pretrain, run_folder

from test_hostile_input import BOMB_SIDE, write_png


@contextlib.contextmanager
def parsed(argv):
    try:
        with parsed_flags(argv) as flag_values:
            yield flag_values
    finally:
        locking.release_all()  # as at the end of a process: the next run (or a subprocess) may take the folders


def _run(task, argv):
    with parsed(argv) as flag_values:
        task.run(flag_values)


def _truncate(path, keep=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch classification run on a saved (random-init) encoder.keras."""
    from simclr_tf.data.demo import generate_demo_dataset
    from simclr_tf.models.resnet import build_resnet
    root = tmp_path_factory.mktemp("runs")
    demo = generate_demo_dataset(str(root / "demo"), num_train=16, num_val=8, image_size=16, seed=0)
    pretrain_path = root / "pretrain"
    pretrain_path.mkdir()
    build_resnet("resnet18", small_stem=False, image_size=(16, 16)).save(str(pretrain_path / "encoder.keras"))
    finetune_path = str(root / "finetune")
    common = ["--task=classification", f"--train_file_path={demo.train}", "--input_size=16", "--batch_size=8",
              "--num_epochs=2", "--num_classes=4", "--freeze"]
    _run(classification, common + [f"--pretrain_save_path={pretrain_path}", f"--finetune_save_path={finetune_path}"])
    return types.SimpleNamespace(root=root, demo=demo, pretrain=str(pretrain_path), finetune=finetune_path,
                                 common=common)


def _copy(finished, tmp_path, name="copy"):
    return shutil.copytree(finished.finetune, str(tmp_path / name))


def _argv(finished, finetune_path, *extra, pretrain_path=None):
    return finished.common + [f"--pretrain_save_path={pretrain_path or finished.pretrain}",
                              f"--finetune_save_path={finetune_path}", *extra]


# --- 5: a copied or moved folder resumes --------------------------------------------------------------------

def test_a_copied_run_folder_resumes_in_the_copy(finished, tmp_path, capsys):
    copy = _copy(finished, tmp_path)
    os.remove(os.path.join(copy, "model.keras"))  # as if the run had been interrupted after its last epoch
    _run(classification, _argv(finished, copy))
    assert "Resuming from epoch 2" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(copy, "model.keras"))


# --- 4: damaged checkpoints ---------------------------------------------------------------------------------

def test_a_damaged_newest_checkpoint_resumes_from_the_previous_epoch(finished, tmp_path, capsys):
    copy = _copy(finished, tmp_path)
    _truncate(os.path.join(copy, "checkpoints", "state.json"))
    _run(classification, _argv(finished, copy))
    out, err = capsys.readouterr()
    assert "checkpoints/state.json is damaged" in err and "resuming from the previous checkpoint, epoch 1" in err
    assert "Resuming from epoch 1" in out and "epoch 2/2" in out
    assert cb.read_checkpoint_state(os.path.join(copy, "checkpoints"))["epoch"] == 2
    assert [line.split(",")[0] for line in open(os.path.join(copy, "history.csv"))][1:] == ["1", "2"]


def test_unusable_checkpoints_exit_2_and_only_resume_false_overwrite_starts_over(finished, tmp_path, monkeypatch):
    copy = _copy(finished, tmp_path)
    _truncate(os.path.join(copy, "checkpoints", "state.json"))
    _truncate(os.path.join(copy, "checkpoints", "state.previous.json"))
    result = run_main(*_argv(finished, copy))  # end to end: status 2, one message, no traceback
    assert_user_error(result, f"--finetune_save_path={copy}: the checkpoint cannot be used",
                      "checkpoints/state.json is damaged", "--resume=false --overwrite")
    # The fingerprint cannot be read, so --resume=false alone cannot tell a rerun from another configuration.
    for extra in ([], ["--resume=false"], ["--overwrite"]):
        with parsed(_argv(finished, copy, *extra)) as flag_values, \
                pytest.raises(UserError, match="state.json is damaged"):
            run_folder.plan_run(flag_values, classification.FLAGS_READ, copy, "--finetune_save_path",
                                classification.RESULT_FILES)
    monkeypatch.setattr(cb, "read_checkpoint_state", lambda *a, **k: pytest.fail("the state was read"))
    with parsed(_argv(finished, copy, "--resume=false", "--overwrite")) as flag_values:
        plan = run_folder.plan_run(flag_values, classification.FLAGS_READ, copy, "--finetune_save_path",
                                   classification.RESULT_FILES)
    assert plan.start_over and plan.state is None


def test_a_damaged_finetune_json_is_a_user_error(finished, tmp_path):
    from tasks import artifacts
    copy = _copy(finished, tmp_path)
    info = os.path.join(copy, "finetune.json")
    text = open(info).read()
    for damaged in (text[: len(text) // 2], text.replace('"num_classes": 4', '"num_classes": 1000000000000'), "\xff"):
        open(info, "w", encoding="latin-1").write(damaged)
        with pytest.raises(UserError, match="finetune.json is damaged"):
            artifacts.read_finetune_info(copy)


# --- 8: nothing of a finished run is removed before the new run's inputs are loaded ----------------------------

def test_a_damaged_encoder_when_starting_over_leaves_the_finished_run_intact(finished, tmp_path):
    copy = _copy(finished, tmp_path)
    pretrain_copy = shutil.copytree(finished.pretrain, str(tmp_path / "pretrain"))
    _truncate(os.path.join(pretrain_copy, "encoder.keras"))
    before = {name: os.stat(os.path.join(copy, name)).st_mtime_ns for name in os.listdir(copy)
              if name != locking.LOCK_FILE}  # (the lock is taken: the run got as far as its plan)
    flags_text = open(os.path.join(copy, "flags.txt")).read()
    with pytest.raises(UserError, match=r"--pretrain_save_path: .*encoder.keras is damaged: it is not a complete "
                                        r"\.keras file"):
        _run(classification, _argv(finished, copy, "--resume=false", "--overwrite", pretrain_path=pretrain_copy))
    for name in ("model.keras", "finetune.json", "history.csv", "checkpoints", "flags.txt"):
        assert os.path.exists(os.path.join(copy, name)), name
    assert os.listdir(os.path.join(copy, "checkpoints"))
    assert open(os.path.join(copy, "flags.txt")).read() == flags_text
    assert {name: os.stat(os.path.join(copy, name)).st_mtime_ns for name in before} == before


# --- 6: one run per folder at a time --------------------------------------------------------------------------

_HOLD = "import sys, time; from tasks import locking; locking.lock_folder(sys.argv[1]); print('locked', flush=True); " \
        "time.sleep(300)"
_TRY = ("import sys; from tasks import locking\n"
        "try:\n    lock = locking.lock_folder(sys.argv[1])\n"
        "except locking.FolderInUse as e:\n    print('refused:', e); sys.exit(3)\n"
        "print('locked; previous holder:', lock.previous_holder)")


def _python(code, folder, **kwargs):
    return subprocess.run([sys.executable, "-c", code, folder], cwd=REPO, capture_output=True, text=True, timeout=60,
                          **kwargs)


def test_a_second_run_on_the_same_folder_is_refused_until_the_first_dies(tmp_path, capsys):
    folder = str(tmp_path / "run")
    os.makedirs(folder)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, folder], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = _python(_TRY, folder)
        assert second.returncode == 3 and f"in use by process {holder.pid} (started " in second.stdout, second
        with parsed(["--task=pretrain"]) as flag_values, pytest.raises(UserError) as info:
            run_folder.plan_run(flag_values, pretrain.FLAGS_READ, folder, "--pretrain_save_path", pretrain.RESULT_FILES)
        assert f"--pretrain_save_path={folder} is already in use by process {holder.pid} (started " in str(info.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel released the dead holder's lock: the next process takes it over and says whose it was.
    second = _python(_TRY, folder)
    assert second.returncode == 0 and f"previous holder: {holder.pid} " in second.stdout, second
    # A clean exit leaves no holder behind; a killed one is taken over with one line.
    with parsed(["--task=pretrain"]) as flag_values:
        run_folder.plan_run(flag_values, pretrain.FLAGS_READ, folder, "--pretrain_save_path", pretrain.RESULT_FILES)
        assert "taking over" not in capsys.readouterr().out
        locking.release_all()
        with open(os.path.join(folder, locking.LOCK_FILE), "w") as f:
            f.write("999999 2024-01-02T03:04:05 otherhost\n")
        run_folder.plan_run(flag_values, pretrain.FLAGS_READ, folder, "--pretrain_save_path", pretrain.RESULT_FILES)
    assert (f"--pretrain_save_path={folder}: taking over the lock of process 999999 (started 2024-01-02 03:04:05 on "
            "otherhost), which ended without releasing it") in capsys.readouterr().out


# --- 7: unwritable output folders fail before any work ----------------------------------------------------------

def _simulate_read_only(monkeypatch, folder):
    """Makes creating files in `folder` fail as on a read-only file system (EROFS)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.realpath(dir) == os.path.realpath(folder):
            raise OSError(errno.EROFS, "Read-only file system", dir)
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr("simclr_tf.io_utils.tempfile.mkstemp", mkstemp)


def test_a_read_only_save_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    from simclr_tf.io_utils import check_writable_folder
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        with pytest.raises(UserError, match="--output_path=.*read_only: cannot write into the folder "
                                            r"\(permission denied\)"):
            check_writable_folder(str(folder), "--output_path")
        with pytest.raises(UserError, match=r"cannot create the folder \(permission denied\)"):
            check_writable_folder(str(folder / "new"), "--output_path")
    elif os.path.isdir("/sys") and not _can_create_in("/sys"):
        # As root, chmod does not stop writes; sysfs refuses new files even to root.
        with pytest.raises(UserError, match="--output_path=/sys: cannot write into the folder"):
            check_writable_folder("/sys", "--output_path")
        with pytest.raises(UserError, match="--output_path=/sys/simclr-tf-test: cannot create the folder"):
            check_writable_folder("/sys/simclr-tf-test", "--output_path")
    folder = tmp_path / "on_read_only_fs"
    folder.mkdir()
    _simulate_read_only(monkeypatch, folder)
    with parsed(["--task=pretrain"]) as flag_values, pytest.raises(UserError) as info:
        run_folder.plan_run(flag_values, pretrain.FLAGS_READ, str(folder), "--pretrain_save_path",
                            pretrain.RESULT_FILES)
    assert str(info.value) == (f"--pretrain_save_path={folder}: cannot write into the folder (read-only file "
                               "system). Give a writable folder.")
    assert os.listdir(folder) == []


def _can_create_in(folder):
    try:
        fd, path = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.remove(path)
    return True


def test_every_output_flag_is_checked_before_training_or_inference(finished, tmp_path, monkeypatch):
    a_file = str(tmp_path / "a_file")
    open(a_file, "w").close()
    is_a_file = "is a file, not a folder"
    with parsed(["--task=pretrain"]) as flag_values, \
            pytest.raises(UserError, match=f"--pretrain_save_path={a_file} {is_a_file}"):
        run_folder.plan_run(flag_values, pretrain.FLAGS_READ, a_file, "--pretrain_save_path", pretrain.RESULT_FILES)
    from tasks import artifacts
    monkeypatch.setattr(artifacts, "load_pretrained_encoder", lambda *a: pytest.fail("the encoder was loaded"))
    monkeypatch.setattr(artifacts, "load_finetuned_model", lambda *a: pytest.fail("the model was loaded"))
    demo = finished.demo
    cases = [
        (predict, ["--task=predict", f"--test_file_path={demo.val}", f"--finetune_save_path={finished.finetune}",
                   f"--output_path={a_file}"], "--output_path"),
        (embed, ["--task=embed", f"--test_file_path={demo.val}", f"--output_path={a_file}", "--input_size=16"],
         "--output_path"),
        (linear_eval, ["--task=linear_eval", f"--train_file_path={demo.train}", f"--val_file_path={demo.val}",
                       f"--pretrain_save_path={a_file}", "--input_size=16"], "--pretrain_save_path"),
    ]
    for task, argv, flag_name in cases:
        with pytest.raises(UserError, match=f"{flag_name}={a_file} {is_a_file}"):
            _run(task, argv)
    # evaluate writes metrics.json into the model's folder.
    copy = _copy(finished, tmp_path)
    _simulate_read_only(monkeypatch, copy)
    with pytest.raises(UserError, match=f"--finetune_save_path={copy}: cannot write into the folder"):
        _run(evaluate, ["--task=evaluate", f"--val_file_path={demo.val}", f"--finetune_save_path={copy}"])


# --- 2 end to end: predict lists a bomb as one undecodable file ---------------------------------------------

def test_predict_skips_a_decompression_bomb_with_one_line(finished, tmp_path, capsys):
    bomb = write_png(tmp_path / "bomb.png", BOMB_SIDE, BOMB_SIDE)
    good = str(tmp_path / "good.png")
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(good)
    (tmp_path / "test.txt").write_text("good.png\nbomb.png\n")
    output = str(tmp_path / "out")
    _run(predict, ["--task=predict", f"--test_file_path={tmp_path / 'test.txt'}",
                   f"--finetune_save_path={finished.finetune}", f"--output_path={output}"])
    assert f"skipped undecodable file: {bomb} (it is {BOMB_SIDE}x{BOMB_SIDE} = 400,000,000 pixels, above the limit " \
        "of 89,478,485 pixels" in capsys.readouterr().out
    rows = open(os.path.join(output, "predictions.csv")).read().splitlines()
    assert len(rows) == 2 and rows[1].startswith(good + ",")


def test_a_run_that_fails_before_writing_leaves_no_new_folder_behind(tmp_path):
    folder = str(tmp_path / "new" / "run")
    with parsed(["--task=pretrain"]) as flag_values:
        run_folder.plan_run(flag_values, pretrain.FLAGS_READ, folder, "--pretrain_save_path", pretrain.RESULT_FILES)
        assert os.listdir(folder) == [locking.LOCK_FILE]
    assert not os.path.exists(folder)  # released (at exit, here by the test) with nothing written
    os.makedirs(folder)
    with parsed(["--task=pretrain"]) as flag_values:
        run_folder.plan_run(flag_values, pretrain.FLAGS_READ, folder, "--pretrain_save_path", pretrain.RESULT_FILES)
    assert os.listdir(folder) == [locking.LOCK_FILE]  # a folder the user made stays
