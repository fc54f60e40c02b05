"""The one download display of the CLI (apply, serve start, serve pull)."""

from __future__ import annotations

import pytest

from batuta.cli.progress import DownloadBar


def test_pull_bar_tracks_each_download(capsys: pytest.CaptureFixture[str]) -> None:
    bar = DownloadBar(transient=False)
    bar.close()  # nothing shown when nothing downloads
    assert capsys.readouterr().err == ""
    bar("model.gguf", 0, 100)
    bar("model.gguf", 100, 100)
    bar("other.gguf", 5, None)  # no size: said once, as a line
    bar("other.gguf", 9, None)
    assert set(bar._tasks) == {"model.gguf"}
    bar.close()
    err = capsys.readouterr().err
    assert "model.gguf" in err and err.count("other.gguf") == 1


def test_digests_are_shortened_and_a_log_keeps_no_bar(capsys: pytest.CaptureFixture[str]) -> None:
    digest = "sha256:" + "ab" * 32
    with DownloadBar() as progress:  # stderr is no terminal here: the bars go at the end
        progress("pulling manifest", 0, None)
        progress(digest, 10, 100)
        assert [t.description for t in progress._bar.tasks] == ["ab" * 16]
    assert progress._bar is None
    assert capsys.readouterr().err.strip() == "pulling manifest"  # no bar left behind
