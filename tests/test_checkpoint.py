"""Training state is untrusted input: a trainer_state.json whose step or best metric lies, an
optimiser state of NaN, flags that would train something else than asked, and a resume that changes
the learning-rate schedule says so and how to keep it."""

import json
import logging

import mlx.core as mx
import pytest
from test_training import TINY, _trainer, data  # noqa: F401  (data: the module's fixture)

from mlx_albert.cli import main
from mlx_albert.training import TrainingArgs


@pytest.fixture()
def run(data, tmp_path):  # noqa: F811
    _trainer(data, tmp_path, max_steps=2, save_steps=2).train()
    return tmp_path / "run" / "checkpoint-2"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("step", 10**18, "field step is 1000000000000000000, not the step 2 its folder names"),
        ("step", -5, "field step is -5, not the step 2 its folder names"),
        ("best_metric", float("nan"), "field best_metric is nan, not a finite number"),
        ("best_step", 7, "field best_step is 7, not a step of this run up to 2"),
    ],
)
def test_a_lying_trainer_state_is_refused_naming_file_and_field(data, run, tmp_path, field, value, message):  # noqa: F811
    state = json.loads((run / "trainer_state.json").read_text())
    (run / "trainer_state.json").write_text(json.dumps({**state, field: value}))
    with pytest.raises(ValueError, match=f"checkpoint-2/trainer_state.json is unreadable \\({message}"):
        _trainer(data, tmp_path, max_steps=4, resume=True).train()


def test_an_optimizer_state_of_nan_is_never_the_last_good_checkpoint(data, run, tmp_path):  # noqa: F811
    moments = dict(mx.load(str(run / "optimizer.safetensors")))
    moments = {k: mx.full(v.shape, float("nan")) if mx.issubdtype(v.dtype, mx.floating) else v
               for k, v in moments.items()}  # fmt: skip
    mx.save_safetensors(str(run / "optimizer.safetensors"), moments)
    with pytest.raises(ValueError, match="optimizer.safetensors is unreadable .*NaN or infinity"):
        _trainer(data, tmp_path, max_steps=4, resume=True).train()


def test_a_resume_that_changes_the_schedule_says_so_and_how_to_keep_it(data, run, tmp_path, caplog):  # noqa: F811
    with caplog.at_level(logging.WARNING):
        again = _trainer(data, tmp_path, max_steps=4, resume=True)
        again.train()
    assert again.state["step"] == 4
    assert "checkpoint-2 was trained on a learning-rate schedule of" in caplog.text
    assert "to keep the old one, resume with --max-steps 2 --schedule linear" in caplog.text
    with pytest.raises(ValueError, match="is at step 4, past this run's 3 steps: resume with --max-steps 4"):
        _trainer(data, tmp_path, max_steps=3, resume=True).train()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "epochs must be a number above 0, got 0.0"),
        (["--epochs", "-1"], "epochs must be a number above 0, got -1.0"),
        (["--epochs", "nan"], "epochs must be a number above 0, got nan"),
        (["--max-steps", "0"], "max_steps must be an integer >= 1, got 0"),
        (["--lora-rank", "4", "--lora-alpha", "inf"], "lora_alpha must be a finite number"),
        (["--learning-rate", "-1"], "learning_rate must be a finite number >= 0"),
    ],
)
def test_flags_that_would_train_something_else_are_refused(capsys, tmp_path, flags, message):
    rows = tmp_path / "t.jsonl"
    rows.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    task = ["--task", "sequence_classification", "--train", str(rows), "--output-dir", str(tmp_path / "out")]
    code = main(["train", "--model", str(TINY), *task, *flags])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_training_args_check_their_fields():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got True"):
        TrainingArgs(batch_size=True)
    with pytest.raises(ValueError, match=r"mlm_probability must be in \(0, 1\)"):
        TrainingArgs(mlm_probability=0.0)
