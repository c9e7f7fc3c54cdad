"""Notifications through apprise to a real HTTP server on 127.0.0.1, from the notifier and from a real pipeline."""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from pipeline_support import TRAIN, Webhook, fields, lt_pipeline, py, start_pipeline, write_pipeline

from lightning_track.errors import ConfigError
from lightning_track.launch.notify import Notifier, message_body
from lightning_track.redaction import redact_url

HERE = Path(__file__).resolve().parent


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_message_body_is_a_line_then_fields() -> None:
    body = message_body("train:  failed\nat step 3", {"check": "nonfinite_loss", "value": float("nan"), "step": 3,
                                                     "run_dir": None, "best": {"val/loss": 0.25}})
    assert body.splitlines() == ["train: failed at step 3", "check: nonfinite_loss", "value: nan", "step: 3",
                                 "best: val/loss=0.25"]


@pytest.mark.parametrize("url, secret", [
    ("slack://TokenA/TokenB/TokenC/#chan", "TokenA"),  # Slack's token triple, the first in the host part
    ("pover://user@TOKENxyz", "TOKENxyz"),  # Pushover: the token is the host
    ("pbul://o.TOKENabc", "TOKENabc"),  # Pushbullet: the token is the whole host
    ("json://user:secret@example.com:8080/hook", "secret"),
    ("tgram://123456:ABCdef/987", "ABCdef"),
])
def test_urls_are_shown_as_scheme_and_fingerprint(url: str, secret: str) -> None:
    shown = redact_url(url)
    scheme = url.split("://")[0]
    assert re.fullmatch(rf"{scheme}://…#[0-9a-f]{{8}}", shown) and secret not in shown and secret.lower() not in shown
    assert redact_url(url + "x") != shown  # two URLs of one service are told apart


def test_a_url_apprise_does_not_understand_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--notify nowhere://…#[0-9a-f]{8}: not a URL apprise understands"):
        Notifier(["nowhere://x"])
    assert not Notifier([]).enabled


def test_without_apprise_notify_is_refused_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)
    with pytest.raises(ConfigError, match=r"pip install 'lightning_track\[notify\]'"):
        Notifier(["json://127.0.0.1/x"])
    Notifier([]).send("done", "t", "line")  # no URL: no apprise needed


def test_the_webhook_receives_json_with_the_fields(webhook: Webhook) -> None:
    notifier = Notifier([webhook.url])
    notifier.send("failed", "exp train: failed", "train: loss is nan", {"check": "nonfinite_loss", "step": 3})
    notifier.close()
    [item] = webhook.received
    assert item["_path"] == "/hook" and item["title"] == "exp train: failed" and item["type"] == "failure"
    assert fields(item) == {"event": "failed", "check": "nonfinite_loss", "step": "3"}


def test_an_undeliverable_notification_is_one_line() -> None:
    lines: list[str] = []
    notifier = Notifier([f"json://127.0.0.1:{closed_port()}/hook"], log=lines.append)
    notifier.send("done", "t", "line")
    notifier.close()
    assert len(lines) == 1 and lines[0].startswith("notification 'done' to json://…#")


@pytest.mark.slow
def test_a_pipeline_notifies_healthy_done_and_failed(tmp_path: Path, webhook: Webhook) -> None:
    root = str(tmp_path / "runs")
    path = write_pipeline(tmp_path, {"good": {"cmd": py(TRAIN, root)},
                                     "bad": {"cmd": py(TRAIN, root, "--nan-at", "3"), "after": ["good"]}})
    result = lt_pipeline(path, "--notify", webhook.url, "--notify", f"json://127.0.0.1:{closed_port()}/down")
    assert result.returncode == 1, result.stderr
    healthy = webhook.wait_for(lambda i: i["title"] == "exp good: healthy")
    assert fields(healthy)["exp_id"] == "exp_good" and healthy["type"] == "info"
    done = fields(webhook.wait_for(lambda i: i["title"] == "exp good: done"))
    assert done["pipeline"] == "exp" and done["pipeline_step"] == "good" and done["run_dir"].startswith(root)
    assert "train/loss=" in done["final"] and "train/loss=" in done["best"]
    failed = webhook.wait_for(lambda i: i["title"] == "exp bad: failed")
    assert failed["type"] == "failure"
    assert {k: fields(failed)[k] for k in ("check", "value", "step")} == {
        "check": "nonfinite_loss", "value": "nan", "step": "4"}
    # the dead endpoint: one line per notification, and the pipeline went on
    assert len(re.findall(r"to json://…#[0-9a-f]{8} not delivered", result.stderr)) == 3  # healthy, done, failed


@pytest.mark.slow
def test_a_pipeline_notifies_interrupted_and_a_stale_heartbeat(tmp_path: Path, webhook: Webhook) -> None:
    path = write_pipeline(tmp_path, {"silent": {"cmd": py(HERE / "stale_step_script.py", str(tmp_path / "runs" / "x"),
                                                          "60")}})
    driver = start_pipeline(path, "--notify", webhook.url, "--stale", "1", "--grace", "5")
    t0 = time.monotonic()
    stale = webhook.wait_for(lambda i: i["title"] == "exp silent: stale", timeout=30)
    assert time.monotonic() - t0 < 20
    assert "no heartbeat for" in stale["message"].splitlines()[0]
    assert fields(stale)["run_dir"] == str(tmp_path / "runs" / "x")
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    interrupted = webhook.wait_for(lambda i: i["title"] == "exp silent: interrupted")
    assert interrupted["type"] == "warning"
    assert len([i for i in webhook.received if i["title"] == "exp silent: stale"]) == 1  # told once


def test_an_email_reaches_a_real_smtp_server() -> None:
    controller_module = pytest.importorskip("aiosmtpd.controller")
    received: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001, ANN201 - aiosmtpd's hook
            received.append(envelope)
            return "250 OK"

    port = closed_port()
    controller = controller_module.Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        notifier = Notifier([f"mailto://127.0.0.1:{port}?from=lt@example.com&to=me@example.com&mode=insecure"])
        notifier.send("failed", "exp train: failed", "train: loss is nan", {"check": "nonfinite_loss", "step": 4})
        notifier.close()
    finally:
        controller.stop()
    [mail] = received
    assert mail.mail_from == "lt@example.com" and mail.rcpt_tos == ["me@example.com"]
    text = mail.content.decode()
    assert "Subject: exp train: failed" in text and "check: nonfinite_loss" in text and "step: 4" in text
