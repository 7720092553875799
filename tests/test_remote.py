"""Remote nodes: a node with ``host`` (or remotemedia's ``RemotePipelineNode``) runs on
another ``zerohop serve``, reached over real gRPC; the other server runs on another
"host" (its own network and mount namespaces where allowed: see ``hosts.py``)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import shm_entries
from hosts import Host, certificates, other_host
from pydantic import BaseModel
from remotemedia import (
    Server,
    descendants,
    node_pids,
    scrape,
    start_server,
    stop_server,
    wait_until,
)

import zerohop
from zerohop import (
    Audio,
    ManifestError,
    MultiprocessNode,
    Pipeline,
    RemoteNodeError,
    Text,
    Video,
)
from zerohop.client import Client

#: 3.84 MB of float32 audio (20 s at 48 kHz), sent as twenty 1 s chunks.
AUDIO = [
    Audio(np.random.default_rng(i).standard_normal(48_000).astype(np.float32), 48_000)
    for i in range(20)
]
#: Three 1080p RGB frames.
VIDEO = [
    Video(np.random.default_rng(100 + i).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    for i in range(3)
]


def digest(frames: list[Any]) -> str:
    sha = hashlib.sha256()
    for frame in frames:
        array = frame.samples if isinstance(frame, Audio) else frame.pixels
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def chain(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "v1",
        "metadata": {"name": "remote-test"},
        "nodes": list(nodes),
        "connections": [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(nodes)],
    }


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[Server, Host]]:
    """A `zerohop serve` on another host, with metrics."""
    with remote_server(tmp_path, "") as found:
        yield found


@contextmanager
def remote_server(tmp_path: Path, settings: str) -> Iterator[tuple[Server, Host]]:
    """A `zerohop serve` on another host with ``settings`` as its runtime.toml."""
    with other_host() as host:
        print(f"the other host: {host.mode}, {host.address}")
        config = tmp_path / "remote.toml"
        config.write_text(settings)
        proc, server = start_server(
            config, None, host.environ(), metrics=True, host=host.address, prefix=host.prefix
        )
        try:
            yield server, host
        finally:
            if proc.poll() is None:
                stop_server(proc)
            elif proc.stdout is not None:
                proc.stdout.close()


def local_server(tmp_path: Path, hosts: str) -> tuple[Any, Server]:
    config = tmp_path / "local.toml"
    config.write_text(hosts)
    return start_server(config, None, metrics=True)


@pytest.mark.parametrize(
    ("frames", "middle"),
    [
        pytest.param(AUDIO, {"node_type": "Scale", "params": {"factor": 0.5}}, id="audio"),
        pytest.param(VIDEO, {"node_type": "Echo"}, id="video-1080p"),
    ],
)
def test_a_middle_node_on_another_host_gives_the_all_local_outputs(
    remote: tuple[Server, Host], tmp_path: Path, frames: list[Any], middle: dict[str, Any]
) -> None:
    server, _ = remote
    here = f'[hosts."{server.address}"]\n'
    proc, local = local_server(tmp_path, here)
    try:
        first = {"id": "first", "node_type": "PassThrough"}
        last = {"id": "last", "node_type": "PassThrough"}
        split = chain(first, {"id": "mid", **middle, "host": server.address}, last)
        whole = chain(first, {"id": "mid", **middle}, last)
        with Client(local.address, max_message_bytes=64 << 20) as client:
            progress: list[Any] = []
            away = list(client.stream(split, frames, on_progress=progress.append))
            home = list(client.stream(whole, frames))
        assert len(away) == len(frames) and digest(away) == digest(home)
        assert any(p.node_id == "mid" and "on " in p.message for p in progress), progress
        assert local.metrics_url is not None and server.metrics_url is not None
        theirs = scrape(server.metrics_url)
        assert theirs['zerohop_sessions_finished_total{outcome="completed"}'] >= 1
        ours = scrape(local.metrics_url)
        assert ours['zerohop_remote_hops_total{outcome="completed"}'] == 1
        assert ours["zerohop_remote_round_trip_seconds_count"] == len(frames)
        assert ours["zerohop_remote_hops_active"] == 0
    finally:
        stop_server(proc)


def test_consecutive_nodes_on_one_host_run_there_as_one_pipeline(
    remote: tuple[Server, Host],
) -> None:
    server, _ = remote
    pipe = (
        Pipeline("two-away")
        .node("up", "UpperCase", host=server.address)
        .node("bang", "Suffix", host=server.address, suffix="!")
        .node("q", "Suffix", suffix="?")
        .connect("up", "bang", "q")
    )
    assert [f.text for f in pipe.run([Text("hi"), Text("you")])] == ["HI!?", "YOU!?"]
    assert server.metrics_url is not None
    samples = scrape(server.metrics_url)
    # One session there, with both nodes' processes.
    assert samples['zerohop_sessions_finished_total{outcome="completed"}'] == 1
    assert samples['zerohop_node_init_seconds_count{node_type="UpperCase"}'] == 1
    assert samples['zerohop_node_init_seconds_count{node_type="Suffix"}'] == 1


def test_remote_pipeline_node_runs_its_inline_manifest(remote: tuple[Server, Host]) -> None:
    server, _ = remote
    inline = chain(
        {"id": "a", "node_type": "Suffix", "params": {"suffix": "1"}},
        {"id": "b", "node_type": "Suffix", "params": {"suffix": "2"}},
    )
    params = {
        "transport": "grpc",
        "endpoints": [server.address, server.address],
        "manifest": json.dumps(inline),
        "timeout_ms": 30_000,
        "retry": {"max_retries": 2, "backoff_ms": 50},
    }
    pipe = (
        Pipeline("rp")
        .node("up", "UpperCase")
        .add_node("far", "RemotePipelineNode", params)
        .connect("up", "far")
    )
    assert [f.text for f in pipe.run([Text("x"), Text("y")])] == ["X12", "Y12"]


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"circuit_breaker": {"threshold": 3}}, "params.circuit_breaker", "not implemented"),
        ({"health_check": {"interval_ms": 5}}, "params.health_check", "not implemented"),
        ({"transport": "http"}, "params.transport", "gRPC only"),
        ({"retry": {"max_retries": 1, "jitter": True}}, "params.retry.jitter", "not implemented"),
        ({"auth_token": "literal"}, "params.auth_token", "runtime.toml"),
        ({"auth_token": "${HOME}"}, "params.auth_token", "token_env"),
        ({"manifest": {"nodes": [{"id": "a", "node_type": "Echo", "on_error": "skip"}]}},
         "params.manifest.nodes[0].on_error", "cannot carry"),
    ],
)  # fmt: skip
def test_remote_pipeline_node_refuses_what_it_does_not_implement_by_name(
    params: dict[str, Any], field: str, says: str
) -> None:
    base = {"endpoint": "127.0.0.1:9", "manifest": chain({"id": "a", "node_type": "Echo"})}
    with pytest.raises(ManifestError) as info:
        Pipeline().add_node("far", "RemotePipelineNode", {**base, **params})
    assert info.value.path == f"nodes[0].{field}" and says in str(info.value), str(info.value)


class Marker(MultiprocessNode):
    """Writes a file when it initializes: shows whether a local node was started."""

    class Params(BaseModel):
        path: str

    def initialize(self, ctx: Any) -> None:
        Path(self.params.path).write_text("started")


def test_an_unreachable_host_fails_before_any_local_node_starts(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    pipe = (
        Pipeline("unreachable")
        .node("local", Marker, path=str(marker))
        .node("far", "Echo", host="127.0.0.1:9")
        .connect("local", "far")
    )
    with pytest.raises(RemoteNodeError) as info:
        pipe.run([Text("x")])
    err = info.value
    assert (err.node_id, err.host, err.path) == ("far", "127.0.0.1:9", "nodes[1].host")
    assert "cannot connect" in str(err) and "refused" in str(err).lower()
    assert not marker.exists()


def test_a_remote_node_failure_names_node_and_host(remote: tuple[Server, Host]) -> None:
    server, _ = remote
    pipe = Pipeline("bad").node("far", "NoSuchNodeType", host=server.address)
    with pytest.raises(RemoteNodeError) as info:
        pipe.run([Text("x")])
    assert info.value.node_id == "far" and info.value.host == server.address
    assert "NoSuchNodeType" in str(info.value)


def test_a_remote_host_dying_mid_stream_ends_the_session_naming_it(
    remote: tuple[Server, Host],
) -> None:
    server, _ = remote
    pipe = (
        Pipeline("dies")
        .node("near", "PassThrough")
        .node("far", "Echo", host=server.address)
        .connect("near", "far")
    )
    with pipe.session() as session:
        session.send(Text("one"))
        assert session.recv(timeout=60).text == "one"
        away = descendants(server.pid)
        assert node_pids(server), "the remote node runs in a process there"
        os.kill(server.pid, signal.SIGKILL)
        with pytest.raises(RemoteNodeError) as info:
            session.send(Text("two"))
            session.recv(timeout=60)
    assert info.value.node_id == "far" and info.value.host == server.address
    gone = wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in away), 30)
    assert gone is not None, "the remote server's node processes outlived it"


def test_a_cancel_stops_both_sides(remote: tuple[Server, Host], tmp_path: Path) -> None:
    server, _ = remote
    proc, local = local_server(tmp_path, f'[hosts."{server.address}"]\n')
    try:
        manifest = chain(
            {"id": "near", "node_type": "Echo"},
            {"id": "far", "node_type": "Echo", "host": server.address},
        )
        with Client(local.address) as client:
            stream = client.stream(manifest, iter([Text("a")] + [Text("b")] * 1000))
            assert next(stream).text == "a"
            assert node_pids(local) and node_pids(server)
            started = time.monotonic()
            stream.close()  # leaving the loop cancels the call
        took = wait_until(lambda: not node_pids(local) and not node_pids(server), 30)
        assert took is not None, "node processes left after the cancel"
        print(f"both sides clean {time.monotonic() - started:.2f} s after the cancel")
    finally:
        stop_server(proc)


def test_the_dialing_side_dying_stops_the_other_host(
    remote: tuple[Server, Host], tmp_path: Path
) -> None:
    server, _ = remote
    before = shm_entries()
    proc, local = local_server(tmp_path, f'[hosts."{server.address}"]\n')
    manifest = chain({"id": "far", "node_type": "Echo", "host": server.address})
    with Client(local.address) as client:
        stream = client.stream(manifest, iter([Text("a")] + [Text("b")] * 1000))
        assert next(stream).text == "a"
        assert node_pids(server)
        proc.kill()
        took = wait_until(lambda: not node_pids(server), 30)
        assert took is not None, "the other host's node process outlived the dialing server"
        print(f"the other host clean {took:.2f} s after the dialing server died")
        with pytest.raises(Exception):  # noqa: B017 (the call died with the server)
            list(stream)
    proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()
    # What the killed server left in shared memory is reclaimable, as any dead
    # process's (iceoryx2's dead-node cleanup).
    zerohop.reclaim_dead()
    gone = wait_until(lambda: not shm_entries() - before, 30)
    assert gone is not None, f"left: {sorted(shm_entries() - before)}"


def test_a_quiet_session_outlives_the_other_hosts_idle_timeout(tmp_path: Path) -> None:
    """The hop keeps its stream alive while no frame needs to cross (a voice pipeline
    between utterances); the other server's idle timeout is for silent clients."""
    with remote_server(tmp_path, "[server]\nidle_timeout_secs = 2\n") as (server, _):
        pipe = Pipeline("quiet").node("far", "Suffix", host=server.address, suffix="!")
        with pipe.session() as session:
            session.send(Text("a"))
            assert session.recv(timeout=60).text == "a!"
            time.sleep(5)
            session.send(Text("b"))
            assert session.recv(timeout=60).text == "b!"


def test_a_served_manifest_may_only_name_hosts_runtime_toml_lists(tmp_path: Path) -> None:
    proc, local = local_server(tmp_path, "")
    try:
        manifest = chain({"id": "far", "node_type": "Echo", "host": "10.1.2.3:50051"})
        with Client(local.address) as client, pytest.raises(Exception) as info:
            list(client.stream(manifest, [Text("x")]))
        assert "nodes[0].host" in str(info.value) and "runtime.toml" in str(info.value)
    finally:
        stop_server(proc)


def test_tokens_and_certificates_come_from_runtime_toml(tmp_path: Path) -> None:
    with other_host() as host:
        print(f"the other host: {host.mode}, {host.address}")
        ca, cert, key = certificates(tmp_path, "remote", host.address)
        other_ca, _, _ = certificates(tmp_path, "other", host.address)
        config = tmp_path / "remote.toml"
        config.write_text(f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
        proc, server = start_server(
            config, "s3cret", host.environ(), host=host.address, prefix=host.prefix
        )
        try:

            def run(settings: str) -> list[str]:
                local = tmp_path / "local.toml"
                local.write_text(f'[hosts."{server.address}"]\n{settings}')
                pipe = Pipeline("tls", config=_config(local)).node(
                    "far", "Suffix", host=server.address, suffix="!"
                )
                return [f.text for f in pipe.run([Text("x")])]

            assert run(f'token = "s3cret"\nca = "{ca}"\n') == ["x!"]
            os.environ["ZH_TEST_TOKEN"] = "s3cret"
            try:
                assert run(f'token_env = "ZH_TEST_TOKEN"\nca = "{ca}"\n') == ["x!"]
            finally:
                del os.environ["ZH_TEST_TOKEN"]
            with pytest.raises(RemoteNodeError, match="Unauthenticated"):
                run(f'token = "wrong"\nca = "{ca}"\n')
            with pytest.raises(RemoteNodeError, match=r"(?i)certificate"):
                run(f'token = "s3cret"\nca = "{other_ca}"\n')
            with pytest.raises(RemoteNodeError, match="token or token_env"):
                run(f'ca = "{ca}"\n')
        finally:
            stop_server(proc)


def _config(path: Path) -> Any:
    from zerohop.config import RuntimeConfig

    return RuntimeConfig.from_file(path)
