"""`make demo` (mpota demo): the README's first command, end to end on the simulated ESP32."""

from mpota import cli


def test_demo_runs_and_keeps_its_state_in_its_directory(tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["demo", "--dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "Demo OK: the device runs MicroPython v1.23.0 from ota_1, confirmed" in out
    # The simulated board's files (resume state, update history) are the demo's, not the
    # caller's: its filesystem root is the demo directory.
    assert (tmp_path / "demo" / "ota_history.json").exists()
    assert list(elsewhere.iterdir()) == []
