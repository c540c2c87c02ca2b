"""The append-only training log (log.jsonl) after a kill: a torn last line is dropped on resume with a warning; an
invalid line before the last is a clear error naming file and line, before any work."""

import json
import warnings

import pytest

from ddsm.config import ExperimentConfig
from ddsm.training import AutoencoderTrainer, RunDirectory, SlimmableTrainer, read_jsonl
from test_training import _config, _latent_raw, _raw, _script, _write_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _append_torn_record(path):
    """Half of one more record, no newline: a process killed while appending (after its last checkpoint)."""
    last = json.loads(path.read_text().splitlines()[-1])
    text = json.dumps(dict(last, step=last["step"] + 1))
    with open(path, "a") as f:
        f.write(text[: len(text) // 2])


def _corrupt_middle(path):
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:10]
    path.write_text("".join(line + "\n" for line in lines))


def test_read_jsonl_drops_a_torn_last_line_and_refuses_one_in_the_middle(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo')
    with pytest.warns(RuntimeWarning, match=r"log\.jsonl, line 4: dropping a torn last record"):
        assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_jsonl(path, warn=False) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl, line 2: not a JSON record"):
        read_jsonl(path)


def test_resume_after_a_kill_mid_log_write_drops_the_torn_line_with_a_warning(tmp_path):
    cfg = _config(max_steps=4, checkpoint_every=2, sample_images=0)
    SlimmableTrainer(cfg, tmp_path / "run", max_steps=2, progress=False).train()
    run = RunDirectory(tmp_path / "run")
    _append_torn_record(run.log_path)
    with pytest.raises(json.JSONDecodeError):
        [json.loads(line) for line in run.log_path.read_text().splitlines()]  # torn indeed
    resumed = SlimmableTrainer(cfg, run.root, resume=True, progress=False)
    assert resumed.step == 2
    with pytest.warns(RuntimeWarning, match="torn last record"):
        resumed.train()
    assert [r["step"] for r in run.read_log()] == [1, 2, 3, 4]  # every line whole again


def test_resume_with_a_corrupt_line_before_the_last_is_a_one_line_error(tmp_path, capsys):
    config = _write_config(tmp_path / "tiny.yaml", _raw(max_steps=3, checkpoint_every=2, sample_images=0))
    out = tmp_path / "run"
    main = _script("train_slimmable").main
    assert main(["--config", str(config), "--output-dir", str(out), "--no-progress"]) == 0
    log = RunDirectory(out).log_path
    _corrupt_middle(log)
    before = log.read_text()
    capsys.readouterr()
    assert main(["--config", str(config), "--output-dir", str(out), "--resume", "--max-steps", "4",
                 "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert f"{log}, line 2: not a JSON record" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert log.read_text() == before  # nothing rewritten


def test_autoencoder_resume_checks_its_log_first(tmp_path):
    config = ExperimentConfig.from_dict(_latent_raw(tmp_path))
    AutoencoderTrainer(config, tmp_path / "vae", progress=False).train()
    log = RunDirectory(tmp_path / "vae").log_path
    _corrupt_middle(log)
    with pytest.raises(ValueError, match=r"line 2: not a JSON record"):
        AutoencoderTrainer(config, tmp_path / "vae", resume=True, progress=False)
