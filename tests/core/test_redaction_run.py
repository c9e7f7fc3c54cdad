"""The secret rule end to end: a real fit whose command line, config and environment hold secrets and
hyperparameters; meta.json's argv, config.yaml and logs.txt keep the hyperparameters and none of the secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.processes import script_env

from lightning_track.redaction import REDACTED

SCRIPT = Path(__file__).with_name("secrets_script.py")
SECRETS = ("hf_configsecret01", "wandbenvsecret02", "sk-argvsecret03", "hf_argvsecret04", "dbsecret99", "pwsecret05")


@pytest.mark.slow
def test_a_real_run_records_hyperparameters_and_no_secret(tmp_path: Path) -> None:
    argv = ["--api-key=sk-argvsecret03", "--hf-token", "hf_argvsecret04", "--max_new_tokens=64", "--tokenizer", "gpt2",
            "model.pad_token_id=0", "data.url=https://ada:pwsecret05@data.example/d.json", "-p", "8080"]
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "runs"), *argv], capture_output=True,
                          text=True, env=script_env(WANDB_API_KEY="wandbenvsecret02"), timeout=240)
    assert done.returncode == 0, done.stderr
    run = Path(done.stdout.split("RUN_DIR=")[1].strip())
    meta = json.loads((run / "meta.json").read_text())
    assert meta["argv"][2:] == [f"--api-key={REDACTED}", "--hf-token", REDACTED, "--max_new_tokens=64",
                                "--tokenizer", "gpt2", "model.pad_token_id=0",
                                "data.url=https://***@data.example/d.json", "-p", "8080"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"] == {"hf_token": REDACTED, "max_new_tokens": 64, "tokenizer_name": "gpt2", "pad_token_id": 0}
    assert config["author"] == "ada" and config["hub_model_id"] == "ada/tiny"
    assert config["db"] == "postgres://***@db.example:5432/runs"
    logs = (run / "logs.txt").read_text()
    assert f"config token {REDACTED} env {REDACTED}" in logs and "'--max_new_tokens=64', '--tokenizer', 'gpt2'" in logs
    leaked = {s: [p.name for p in run.rglob("*") if p.is_file() and s.encode() in p.read_bytes()] for s in SECRETS}
    assert leaked == dict.fromkeys(SECRETS, [])
