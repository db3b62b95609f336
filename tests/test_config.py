"""Config files: the shipped examples load, and every mistake is named with key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config as agent_config
from firmware import config
from firmware.errors import ConfigError
from firmware.wire import age

ROOT = Path(__file__).resolve().parent.parent
RECIPIENT = age.recipient_of(age.generate_identity())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(text)
    return path


def minimal(extra: str = "", device: str = 'id = "pi-1"') -> str:
    return f'[device]\n{device}\n[archive]\nrecipients = ["{RECIPIENT}"]\n{extra}'


def test_shipped_examples_load() -> None:
    device = config.load(ROOT / "examples" / "device.toml")
    assert device.device.id == "kitchen-pi"
    assert device.uplink.chunk_size == 65536
    agent = agent_config.load(ROOT / "examples" / "agent.toml")
    assert agent.agent.database_path == Path("/var/lib/linerec-agent/archive/index.sqlite")


def test_minimal_config_takes_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, minimal()))
    assert cfg.audio.sample_rate == 8000
    assert cfg.mqtt.port == 1883
    assert cfg.device.signing_key_path == Path("/var/lib/linerec/signing.key")


def test_relative_state_dir_is_taken_from_the_config_folder(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, minimal(device='id = "pi-1"\nstate_dir = "state"')))
    assert cfg.device.state_dir == tmp_path / "state"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            minimal("[audio]\nsample_rate = 44100\n"),
            "audio.sample_rate is 44100; expected 8000 or 16000",
        ),
        (
            minimal('[audio]\nsample_rate = "8000"\n'),
            "audio.sample_rate is '8000'; expected an integer",
        ),
        (minimal('[audio]\ncodec = "mp3"\n'), "audio.codec is 'mp3'; expected one of 'flac', 'opus', 'wav'"),
        (minimal("[audio]\nopus_kbps = 2\n"), "audio.opus_kbps is 2; expected a number from 6 to 64"),
        (minimal("[audio]\npreroll_s = 10.0\n"), "audio.preroll_s is 10.0; expected a number from 0 to 5"),
        (minimal("[audio]\ncheckpoint_s = 5\n"), "audio.checkpoint_s is 5; expected a number from 0.1 to 1.5"),
        (
            minimal("[spool]\nalert_free_mb = 50\nreserve_mb = 100\n"),
            "spool.alert_free_mb is 50; expected at least spool.reserve_mb (100), so the alarm comes first",
        ),
        (minimal(device='id = "Kitchen Pi"'), "device.id is 'Kitchen Pi'; expected 1-63 lowercase letters"),
        (minimal(device='id = "pi"\nline = "usb"'), "device.line is 'usb'; expected one of 'gpio', 'modem', 'sim'"),
        (minimal("[mqtt]\nport = 70000\n"), "mqtt.port is 70000; expected 1-65535"),
        (minimal('[mqtt]\nprotocol = "4"\n'), "mqtt.protocol is '4'; expected one of '5', '3.1.1'"),
        (minimal('[mqtt]\npassword = "x"\n'), "mqtt.password is set but mqtt.username is not"),
        (minimal('[mqtt]\nhots = "broker"\n'), "mqtt.hots is not a known setting"),
        (minimal("[uplink]\nchunk_size = 10\n"), "uplink.chunk_size is 10; expected an integer from 1024 to 131072"),
        (minimal("[uplink]\nevents_include_caller_id = 1\n"), "is 1; expected true or false"),
        (minimal("[recording]\nx = 1\n"), "[recording] is not a known section"),
        ('[device]\nid = "pi"\n', "archive.recipients is missing; it is required"),
        (
            '[device]\nid = "pi"\n[archive]\nrecipients = ["age1nope"]\n',
            "archive.recipients is 'age1nope'; expected age recipients of the form age1...",
        ),
        ('[device]\nid = "pi"\n[archive]\nrecipients = []\n', "archive.recipients is []; expected at least one"),
        ("[archive]\nrecipients = 3\n", "device.id is missing; it is required"),
        ("[device\nid = 1", "is not valid TOML"),
    ],
)
def test_bad_setting_names_key_value_and_what_is_allowed(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.toml: the config file does not exist$"):
        config.load(tmp_path / "nope.toml")


def test_agent_config_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\narchive = "/srv"\n')
    with pytest.raises(ConfigError, match=r"agent.archive is not a known setting"):
        agent_config.load(path)


def test_run_with_a_broken_config_prints_one_line_and_exits_with_the_config_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from firmware.cli import main  # noqa: PLC0415

    path = write(tmp_path, minimal("[audio]\nsample_rate = 44100\n"))
    assert main(["run", "--config", str(path)]) == 78  # EX_CONFIG: systemd does not restart it
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"linerec: error: {path}: audio.sample_rate is 44100; expected 8000 or 16000"]


def test_missing_tls_files_are_one_clear_error_when_the_client_is_made(tmp_path: Path) -> None:
    from firmware.wire.broker import BrokerSettings, BrokerSettingsError  # noqa: PLC0415

    settings = BrokerSettings(host="broker.lan", port=8883, tls=True, ca_file=tmp_path / "ca.crt")
    with pytest.raises(BrokerSettingsError) as info:
        settings.client("pi-1")
    expected = f"cannot load the TLS files for the broker at broker.lan:8883 ({tmp_path}/ca.crt)"
    assert str(info.value).startswith(expected)


def test_the_service_refuses_the_simulated_line_under_systemd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from firmware.cli import main  # noqa: PLC0415

    path = write(tmp_path, minimal(device='id = "pi-1"\nline = "sim"'))
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    assert main(["run", "--config", str(path)]) == 78
    err = capsys.readouterr().err.strip().splitlines()
    sim = 'device.line is "sim" (the simulated line); set it to "gpio" or "modem" for the service'
    assert err == [f"linerec: error: {path}: {sim}"]
