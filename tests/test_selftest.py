"""``linerec selftest`` names what is missing, one line per part, and fails when anything does."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware import config as device_config
from firmware.cli import main
from firmware.wire import age
from firmware.wire.signing import load_or_create_signing_key
from tests.support.broker import Mosquitto, free_port

RECIPIENT = age.recipient_of(age.generate_identity())


def write_config(tmp_path: Path, *, line: str = "sim", port: int, extra: str = "") -> Path:
    path = tmp_path / "device.toml"
    path.write_text(
        f'[device]\nid = "pi-1"\nline = "{line}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[archive]\nrecipients = ["{RECIPIENT}"]\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n{extra}'
    )
    return path


def test_a_ready_simulated_device_passes_every_check(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, port=mosquitto.port)
    load_or_create_signing_key(tmp_path / "state" / "signing.key")
    assert main(["selftest", "--config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[ ok ] line (sim): simulated line, nothing to probe"
    assert out[1] == "[skip] sound device: audio comes from the sim line"
    assert out[2] == f"[ ok ] broker 127.0.0.1:{mosquitto.port}: accepts the connection"
    assert out[3].startswith("[ ok ] keys: signing key ")
    assert out[4].startswith(f"[ ok ] spool: {tmp_path / 'state' / 'spool'} is writable, ")
    assert out[-1] == "all checks passed"


def test_missing_broker_and_keys_fail_with_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    path = write_config(tmp_path, port=port)
    assert main(["selftest", "--config", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith(f"[FAIL] broker 127.0.0.1:{port}: cannot connect")
    key = tmp_path / "state" / "signing.key"
    assert out[3] == f"[FAIL] keys: no signing key at {key}; `linerec keys show` creates it"
    assert out[-1] == "2 of 5 checks failed: broker 127.0.0.1:" + str(port) + ", keys"


def test_a_signing_key_others_can_read_fails(tmp_path: Path) -> None:
    cfg = device_config.load(write_config(tmp_path, port=1883))
    load_or_create_signing_key(cfg.device.signing_key_path)
    cfg.device.signing_key_path.chmod(0o644)
    from firmware.selftest import check_keys  # noqa: PLC0415

    check = check_keys(cfg)
    assert (check.ok, check.detail) == (
        False,
        f"signing key {cfg.device.signing_key_path} has mode 0644; run chmod 600 {cfg.device.signing_key_path}",
    )


def test_a_spool_that_cannot_be_written_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state folder should be")
    cfg = device_config.load(write_config(tmp_path, port=1883))
    from firmware.selftest import check_spool  # noqa: PLC0415

    check = check_spool(cfg)
    assert check.ok is False
    assert check.detail.startswith(f"{blocker / 'spool'} is not writable")


def test_a_modem_that_is_not_there_fails(tmp_path: Path) -> None:
    cfg = device_config.load(
        write_config(tmp_path, line="modem", port=1883, extra=f'[modem]\nport = "{tmp_path / "ttyACM9"}"\n')
    )
    from firmware.selftest import check_line  # noqa: PLC0415

    check = check_line(cfg)
    assert check.ok is False
    assert check.detail.startswith(f"serial port {tmp_path / 'ttyACM9'} cannot be opened")


def test_gpio_on_a_machine_without_the_board_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    cfg = device_config.load(write_config(tmp_path, line="gpio", port=1883))
    from firmware.selftest import check_line  # noqa: PLC0415

    check = check_line(cfg)
    if Path("/dev/gpiochip0").exists() and check.ok:
        pytest.skip("this machine has real GPIO")
    assert check.ok is False
    assert "is this a Raspberry Pi with the linerec board?" in check.detail


def test_gpio_pins_are_read_through_gpiozero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpiozero import Device  # noqa: PLC0415
    from gpiozero.pins.mock import MockFactory  # noqa: PLC0415

    monkeypatch.setattr(Device, "pin_factory", MockFactory())
    cfg = device_config.load(write_config(tmp_path, line="gpio", port=1883))
    from firmware.selftest import check_line  # noqa: PLC0415

    check = check_line(cfg)
    assert check.ok is True
    assert check.detail.startswith("ring GPIO17=")


def test_a_sound_device_that_does_not_exist_fails(tmp_path: Path) -> None:
    cfg = device_config.load(
        write_config(tmp_path, line="gpio", port=1883, extra='[gpio]\naudio_device = "no such card"\n')
    )
    from firmware.selftest import check_sound  # noqa: PLC0415

    check = check_sound(cfg)
    assert check.ok is False
    assert "no such card" in check.detail or "PortAudio" in check.detail


def test_a_modem_that_answers_at_passes(tmp_path: Path) -> None:
    from tests.support.modem_sim import ModemSim  # noqa: PLC0415

    with ModemSim() as modem:
        cfg = device_config.load(
            write_config(tmp_path, line="modem", port=1883, extra=f'[modem]\nport = "{modem.path}"\n')
        )
        from firmware.selftest import check_line  # noqa: PLC0415

        check = check_line(cfg)
        assert (check.ok, check.detail) == (True, f"the modem on {modem.path} answers AT")
        assert modem.commands == ["AT"]


def test_a_modem_that_does_not_say_ok_fails(tmp_path: Path) -> None:
    from tests.support.modem_sim import ModemSim  # noqa: PLC0415

    with ModemSim(refuse=("AT",)) as modem:
        cfg = device_config.load(
            write_config(
                tmp_path, line="modem", port=1883, extra=f'[modem]\nport = "{modem.path}"\ncommand_timeout_s = 0.5\n'
            )
        )
        from firmware.selftest import check_line  # noqa: PLC0415

        check = check_line(cfg)
        assert (check.ok, check.detail) == (False, f"the modem on {modem.path} answered AT with ERROR")
