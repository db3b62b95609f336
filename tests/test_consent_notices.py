"""Notices, spoken prompts, and the [consent] settings that choose them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware.config import parse
from firmware.consent.notices import NoticeLibrary, load_notice, warning_tone
from firmware.wire import age
from firmware.wire.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
RECIPIENT = age.recipient_of(age.generate_identity())
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="make test installs espeak-ng")


def config_with(consent: dict[str, object]) -> dict[str, object]:
    return {"device": {"id": "pi"}, "archive": {"recipients": [RECIPIENT]}, "consent": consent}


def test_the_warning_tone_is_half_a_second_of_1400_hz_without_clicks() -> None:
    tone = warning_tone(8000)
    assert (tone.id, len(tone.audio)) == ("tone-1400hz-0.5s", 4000)
    spectrum = np.abs(np.fft.rfft(tone.audio.astype(np.float64)))
    assert np.argmax(spectrum) * 8000 / len(tone.audio) == pytest.approx(1400.0, abs=2.0)
    assert abs(int(tone.audio[0])) < 200 and abs(int(tone.audio[-1])) < 200


def test_an_owners_notice_is_resampled_to_the_line_and_known_by_its_samples(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    sf.write(tmp_path / "notice-en.flac", 0.3 * np.sin(2 * np.pi * 440 * t), 44100)
    notice = load_notice(tmp_path / "notice-en.flac", 8000, key="consent.notices.en.all-party")
    assert notice.id == "notice-en.flac"
    assert len(notice.audio) == pytest.approx(8000, abs=2)
    library = NoticeLibrary(8000, {"en": {"all-party": tmp_path / "notice-en.flac"}})
    assert library.for_rule("all-party").sha256 == notice.sha256
    assert library.for_rule("notice").id == "tone-1400hz-0.5s"


def test_a_notice_that_is_not_audio_names_its_setting(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_text("not audio")
    with pytest.raises(ConfigError, match=r"^consent\.notices\.en\.notice: .*bad\.wav cannot be read as audio"):
        NoticeLibrary(8000, {"en": {"notice": tmp_path / "bad.wav"}})
    with pytest.raises(ConfigError) as info:
        NoticeLibrary(8000, {"en": {"sometimes": tmp_path / "bad.wav"}})
    assert str(info.value) == (
        "consent.notices.en.sometimes is not a rule; expected one of one-party, all-party, notice, express or question"
    )


@needs_espeak
def test_consent_prompt_speaks_the_text_into_a_file_at_the_line_rate(tmp_path: Path) -> None:
    out = tmp_path / "prompt.flac"
    done = subprocess.run(
        [sys.executable, "-m", "firmware", "consent", "prompt", "--text", "This call is recorded.", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    info = sf.info(str(out))
    assert (info.samplerate, info.channels) == (8000, 1)
    assert 0.8 < info.duration < 5.0


def test_consent_prompt_without_text_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "firmware", "consent", "prompt", "--out", str(tmp_path / "x.wav")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert (done.returncode, done.stderr) == (2, "linerec: error: consent prompt needs --text and --out\n")


def test_consent_settings_read_the_region_lists_notices_and_rule_rows(tmp_path: Path) -> None:
    cfg = parse(
        config_with(
            {
                "region": "US-IL",
                "never_record": ["+1900"],
                "always_announce": ["(312) 555"],
                "notices": {"en": {"all-party": "notice.wav"}},
                "rules": {"US-NY": {"rule": "all-party"}},
                "languages": {"CA-QC": "fr", "MX": "es"},
            }
        ),
        tmp_path / "device.toml",
    )
    assert [cfg.consent.language_for(r) for r in ("CA-QC", "CA-ON", "MX", None)] == ["fr", "en", "es", "en"]
    assert cfg.consent_region == "US-IL"
    assert (cfg.consent.never_record, cfg.consent.always_announce) == (("1900",), ("1312555",))
    assert cfg.consent.notice_files() == {"en": {"all-party": tmp_path / "notice.wav"}}
    assert cfg.consent.rule_overrides() == {"US-NY": {"rule": "all-party"}}


@pytest.mark.parametrize(
    ("consent", "message"),
    [
        (
            {"region": "US-XX"},
            "<config>: consent.region: 'US-XX' is not an ISO 3166 region code that linerec knows; "
            "expected a country such as 'GB' or a subdivision in consent.toml such as 'US-CA'",
        ),
        (
            {"rules": {"US-CA": {"rule": "two-party"}}},
            "<config>: consent.rules.US-CA: rule 'two-party' must be one of one-party, all-party, notice, express",
        ),
        (
            {"never_record": ["mum"]},
            "<config>: consent.never_record: 'mum' is not a phone number or prefix; "
            "expected digits with an optional leading +, such as '+1900' or '0800'",
        ),
        ({"express_timeout_s": 1}, "<config>: consent.express_timeout_s is 1; expected a number from 3 to 60"),
        ({"recordings": True}, "<config>: consent.recordings is not a known setting"),
        (
            {"languages": {"XX": "fr"}},
            "<config>: consent.languages.XX: 'XX' is not an ISO 3166 region code that linerec knows",
        ),
    ],
)
def test_a_bad_consent_setting_names_the_key_or_row(consent: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(config_with(consent))
    assert str(info.value).startswith(message)


def test_consent_with_a_config_takes_its_region_and_never_record_list(tmp_path: Path) -> None:
    conf = tmp_path / "device.toml"
    conf.write_text(
        f'[device]\nid = "pi"\n[archive]\nrecipients = ["{RECIPIENT}"]\n'
        '[consent]\nregion = "US-CA"\nnever_record = ["+1212555"]\n'
    )
    argv = [sys.executable, "-m", "firmware", "consent", "--config", str(conf), "--json"]
    done = subprocess.run([*argv, "+13125550142"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["jurisdiction"] == "US-CA"
    done = subprocess.run([*argv, "+12125550142"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert json.loads(done.stdout)["announce"] is False
