"""Atomic writes: temporary siblings, a full disk, kills between two renames, overlapping paths."""

import errno
import os
from pathlib import Path

import pytest

from mlx_albert.files import atomic_write, check_disjoint, clean_stale, publish_folder, staged_folder


def test_disk_full_is_one_line_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("old")

    def full(tmp: Path):
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=f"no space left on the device while writing {path}"):
        atomic_write(path, full)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_staged_folder_replaces_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "a").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(dest) as tmp:
            (tmp / "a").write_text("new")
            raise RuntimeError("killed")
    assert (dest / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with staged_folder(dest) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["b"] and len(list(tmp_path.iterdir())) == 1


def test_leftovers_of_dead_writers_are_cleaned_and_a_moved_folder_restored(tmp_path):
    dest = tmp_path / "out"
    dead = 2**22 + 12345  # no such pid
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    (tmp_path / f".out.tmp-{dead}-abcdefgh").mkdir()
    (tmp_path / f".out.tmp-{dead}-abcdefgh" / "x").write_text("half")
    old = tmp_path / f".out.old-{dead}-abcdefgh"
    old.mkdir()
    (old / "model").write_text("the user's model")
    (tmp_path / f".other.tmp-{dead}-abcdefgh").write_text("not ours")
    mine = tmp_path / f".out.tmp-{os.getpid()}-abcdefgh"
    mine.write_text("in flight")
    clean_stale(dest)  # a kill fell between "move the old folder aside" and "move the new one in"
    assert (dest / "model").read_text() == "the user's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out", ".other.tmp-" + f"{dead}-abcdefgh", mine.name]
    )


def test_publish_folder_swaps(tmp_path):
    dest, new = tmp_path / "dest", tmp_path / "new"
    dest.mkdir()
    new.mkdir()
    (dest / "old").write_text("1")
    (new / "new").write_text("2")
    publish_folder(new, dest)
    assert [p.name for p in dest.iterdir()] == ["new"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "dest"
    ]


def test_outputs_may_not_overlap_inputs(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    for out in (src, src / "sub", tmp_path):
        with pytest.raises(ValueError, match="would replace or delete the input"):
            check_disjoint({"--output-dir": out}, {"--model": src})
    check_disjoint({"--output-dir": tmp_path / "other"}, {"--model": src})


def test_written_folders_and_files_get_the_umask_mode(tmp_path):
    """Models, conversions and checkpoints are staged in temporary folders and renamed into place:
    they must end with the mode any new folder gets (not mkdtemp's 0700), so that other users and
    containers can read them."""
    import os
    import stat

    import mlx_albert
    from mlx_albert.convert import convert
    from mlx_albert.training import Trainer, TrainingArgs, sop_dataset

    previous = os.umask(0o022)
    try:
        tiny = Path(__file__).parent.parent / "models" / "tiny-albert"
        convert(str(tiny), str(tmp_path / "converted"))
        model = mlx_albert.load(tiny)
        model.save_pretrained(tmp_path / "saved")
        tok = mlx_albert.AlbertTokenizer.from_pretrained(tiny)
        data = sop_dataset([["the cat sat on the mat", "a dog ran far away"]] * 4, tok, 32)
        args = TrainingArgs(output_dir=str(tmp_path / "run"), max_steps=1, progress=False, batch_size=4)
        Trainer(mlx_albert.AlbertForPreTraining(model.config), tok, args, data, data).train()
        written = [tmp_path / "converted", tmp_path / "saved", tmp_path / "run" / "best"]
        written += list((tmp_path / "run").glob("checkpoint-*"))
        assert len(written) == 4
        for folder in written:
            assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
            for item in folder.iterdir():
                assert stat.S_IMODE(item.stat().st_mode) == 0o644, item
    finally:
        os.umask(previous)


SPECIAL = ["config.json", "tokenizer_config.json", "spiece.model", "tokenizer.json", "model.safetensors"]


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
@pytest.mark.parametrize("name", SPECIAL)
def test_a_checkpoint_file_that_is_a_device_or_a_pipe_is_refused_unread(name, kind, tmp_path):
    """stat() of /dev/zero says 0 bytes and a FIFO blocks on open: both are refused before a byte is
    read, by type, for every file a checkpoint folder holds (and the watchdog turns a hang into a
    failure instead of a stuck suite)."""
    import faulthandler
    import shutil

    import mlx_albert

    folder = tmp_path / "m"
    shutil.copytree(Path(__file__).parent.parent / "models" / "tiny-albert", folder)
    target = folder / name
    target.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    faulthandler.dump_traceback_later(20, exit=True)
    try:
        with pytest.raises(ValueError, match="not a regular file"):
            if name in ("config.json", "model.safetensors"):
                mlx_albert.load(folder)
            else:
                mlx_albert.AlbertTokenizer.from_pretrained(folder)
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB file system (tmpfs), where writing the 5 MB bundled model runs out of space; it
    needs root (mount), so elsewhere the test is skipped, never counted."""
    import subprocess

    folder = tmp_path / "small"
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a 2 MB tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()[:200]}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_real_full_disk_is_one_line_for_convert_export_and_checkpoints(small_disk, capsys):
    """MLX's own write failure (RuntimeError "[write] Unable to write", not ENOSPC) on a full device:
    convert, export and a training checkpoint say "no space left" with the path, leave nothing
    behind, and keep what was there."""
    import mlx.optimizers as optim

    from mlx_albert import load
    from mlx_albert.cli import main
    from mlx_albert.training import checkpoint

    model_dir = "pydoc-small"  # the bundled model, 5 MB
    (small_disk / "keep.txt").write_text("mine")
    commands = {
        "convert": ["convert", "--hf-path", model_dir, "--mlx-path", small_disk / "converted"],
        "export": ["export", "--model", model_dir, "--task", "embed", "--output", small_disk / "e.mlxfn"],
    }
    for name, argv in commands.items():
        assert main([str(a) for a in argv]) == 1, name
        err = capsys.readouterr().err
        assert f"mlx-albert {name}: error: no space left on the device while writing" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert sorted(p.name for p in small_disk.iterdir()) == ["keep.txt"], name
    model = load(model_dir, "base")
    optimizer = optim.Adam(1e-3)
    optimizer.init(model.trainable_parameters())
    with pytest.raises(OSError, match="no space left on the device while writing .*checkpoint-1"):
        checkpoint.save(small_disk, 1, model, optimizer, {})
    assert sorted(p.name for p in small_disk.iterdir()) == ["keep.txt"]
    assert (small_disk / "keep.txt").read_text() == "mine"
