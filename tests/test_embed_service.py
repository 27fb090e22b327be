"""app.embed_service: the network's child process dying is one clear error, then a restart;
a scan stops on it instead of recording good files as bad."""
from __future__ import annotations

import os

import pytest

from app.embed_service import EmbedService, EmbedServiceError
from engine.library.catalogue import Library
from engine.library.scan import scan
from tests.fixtures_audio import FakeEmbedder, tone, write


class DiesWhenUnpickled:
    """An argument the child cannot survive receiving: it exits while a call is pending."""

    def __reduce__(self):
        return (os._exit, (3,))


def test_a_dead_embedding_process_is_one_clear_error_then_a_restart(tmp_path):
    service = EmbedService(tmp_path / "never-loaded.safetensors", threads=1)
    try:
        first = service.call("ping")  # no model needed: the process's id
        with pytest.raises(EmbedServiceError) as died:
            service.call("ping", DiesWhenUnpickled())
        message = str(died.value)
        assert "stopped (exit code 3)" in message and "\n" not in message
        assert not service.running
        second = service.call("ping")
        assert second != first and service.running  # a new process answered
    finally:
        service.close()


class DiesOnThirdFile(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.dead = False

    def embed_file(self, path):
        if self.dead or len(self.calls) == 2:
            self.dead = True
            raise EmbedServiceError("the embedding process stopped (exit code -9)")
        return super().embed_file(path)


def test_scan_stops_on_a_dead_embedder_and_blames_no_file(tmp_path):
    music = tmp_path / "music"
    for i in range(5):
        write(music / f"t{i}.wav", tone(220.0 + 40 * i, 1.0))
    lib_dir = tmp_path / "lib"
    with pytest.raises(EmbedServiceError, match="exit code -9"):
        scan([music], library=lib_dir, embedder=DiesOnThirdFile(), workers=1)
    with Library(lib_dir) as lib:
        assert lib.errors() == []  # nothing recorded as a bad file
        kept = {os.path.basename(t.path) for t in lib.tracks(status="ok")}
    assert kept == {"t0.wav", "t1.wav"}  # what was embedded before is kept
    emb = FakeEmbedder()
    report = scan([music], library=lib_dir, embedder=emb)  # the next scan resumes
    assert report.unchanged == 2 and report.added == 3 and not report.failed
    assert sorted(os.path.basename(p) for p in emb.calls) == ["t2.wav", "t3.wav", "t4.wav"]
