"""Memory limits per node and per session: a node past its limit is stopped by the
kernel's accounting (a cgroup per node where this machine allows it, else the RSS
watch) and its session fails naming it; nothing else is touched."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from remotemedia import node_pids, scrape, start_server, stop_server, wait_until

import zerohop.testing  # noqa: F401  (Hog)
from zerohop import Audio, ManifestError, Pipeline, ResourceLimitError, Text
from zerohop.client import Client, RemoteError, ResourceLimits
from zerohop.config import RuntimeConfig

MB = 1_000_000


def config(tmp_path: Path, text: str) -> RuntimeConfig:
    path = tmp_path / "runtime.toml"
    path.write_text(text)
    return RuntimeConfig.from_file(path)


def test_a_node_past_its_limit_fails_its_session_and_no_other() -> None:
    beside = Pipeline("beside").node("e", "Echo").session()
    got: list[Any] = []

    def stream() -> None:
        for i in range(50):
            beside.send(Text(str(i)))
            got.append(beside.recv(timeout=60))

    with beside:
        thread = threading.Thread(target=stream)
        thread.start()
        hog = Pipeline("hog").node("hog", "Hog", mb=100, capabilities={"memory_gb": 0.2})
        with pytest.raises(ResourceLimitError) as info:
            hog.run([Text("a"), Text("b"), Text("c")])
        thread.join(timeout=120)
    err = info.value
    print(err)
    assert (err.node_id, err.limit_bytes) == ("hog", 200 * MB)
    assert err.peak_bytes is not None and err.peak_bytes >= 190 * MB
    assert "hog" in str(err) and "200 MB" in str(err) and "peak" in str(err)
    assert [f.text for f in got] == [str(i) for i in range(50)]


def test_a_session_limit_smaller_than_its_nodes_together(tmp_path: Path) -> None:
    cfg = config(tmp_path, "[process]\nmax_session_memory_bytes = 250000000\n")
    pipe = (
        Pipeline("two", config=cfg)
        .node("a", "Hog", mb=150)
        .node("b", "Hog", mb=150)
        .connect("a", "b")
    )
    with pytest.raises(ResourceLimitError, match="the session's memory limit of 250 MB") as info:
        pipe.run([Text("x")])
    assert info.value.node_id in ("a", "b") and info.value.limit_bytes == 250 * MB


def test_the_operator_ceiling_beats_a_manifest_asking_for_more(tmp_path: Path) -> None:
    from zerohop.manifest import Manifest

    cfg = config(tmp_path, "[process]\nmax_node_memory_bytes = 150000000\n")
    doc = {
        "version": "v1",
        "nodes": [
            {
                "id": "hog",
                "node_type": "Hog",
                "params": {"mb": 100},
                "capabilities": {"memory_gb": 4},
            }
        ],
    }
    pipe = Manifest.parse(doc).to_pipeline(cfg)
    warned = [w for w in pipe.warnings if w.path == "nodes[0].capabilities.memory_gb"]
    assert warned and "ceiling" in str(warned[0])
    with pytest.raises(ResourceLimitError) as info:
        pipe.run([Text("a"), Text("b")])
    assert info.value.limit_bytes == 150 * MB


def test_limits_not_implemented_are_named() -> None:
    with pytest.raises(ManifestError) as info:
        Pipeline().node("e", "Echo", capabilities={"gpu": {"min_memory_gb": 8}})
    assert info.value.path == "nodes[0].capabilities.gpu.min_memory_gb"
    with pytest.raises(ManifestError, match="positive number"):
        Pipeline().node("e", "Echo", capabilities={"memory_gb": -1})


def test_the_rss_watch_holds_a_limit_without_cgroups() -> None:
    """Where no cgroup can be made, the supervisor watches resident memory (forced here
    with ZEROHOP_MEMORY_ACCOUNTING=rss)."""
    script = (
        "import zerohop.testing\n"
        "from zerohop import Pipeline, Text, ResourceLimitError\n"
        "pipe = Pipeline('hog').node('hog', 'Hog', mb=50, capabilities={'memory_gb': 0.2})\n"
        "try:\n"
        "    pipe.run([Text(str(i)) for i in range(20)])\n"
        "except ResourceLimitError as err:\n"
        "    print(err.node_id, err.limit_bytes, err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ZEROHOP_MEMORY_ACCOUNTING": "rss"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("hog 200000000 "), done.stdout + done.stderr
    assert "RSS watch" in done.stdout


def test_a_served_node_past_its_limit_names_it(tmp_path: Path) -> None:
    (tmp_path / "runtime.toml").write_text('[nodes]\nmodules = ["zerohop.testing"]\n')
    proc, server = start_server(tmp_path / "runtime.toml", None)
    try:
        doc = {
            "version": "v1",
            "nodes": [
                {
                    "id": "hog",
                    "node_type": "Hog",
                    "params": {"mb": 100},
                    "capabilities": {"memory_gb": 0.2},
                }
            ],
        }
        with Client(server.address) as client, pytest.raises(RemoteError) as info:
            list(client.stream(doc, [Text("a"), Text("b"), Text("c")]))
        assert info.value.error_type == "RESOURCE_LIMIT" and info.value.node_id == "hog"
        assert "200 MB" in str(info.value)
    finally:
        stop_server(proc)


def test_a_thread_budget_reaches_the_node_before_its_imports(tmp_path: Path) -> None:
    cfg = config(tmp_path, "[process]\npin_cpus = true\n")
    cpus = sorted(os.sched_getaffinity(0))
    pipe = (
        Pipeline("budget", config=cfg)
        .node("one", "Environment", capabilities={"cpu": {"cores": 1}})
        .node("other", "Environment", capabilities={"cpu": {"cores": 1}})
        .node("free", "Environment")
    )
    with pipe.session() as session:
        seen = {}
        for label in ("one", "other", "free"):
            session.send(Text("?"), to=label)
        for _ in range(3):
            frame = session.recv(timeout=60)
            seen[frame.source] = frame.value
    for label in ("one", "other"):
        assert seen[label]["threads"] == 1
        assert set(seen[label]["env"].values()) == {"1", None}, seen[label]["env"]
        assert seen[label]["env"]["OMP_NUM_THREADS"] == "1"
        # numpy's OpenBLAS, loaded by the zygote before the budget was known, was told.
        assert seen[label]["openblas"] in (1, None)
        assert len(seen[label]["cpus"]) == 1
    if len(cpus) > 1:
        assert seen["one"]["cpus"] != seen["other"]["cpus"]  # CPUs of their own
    assert seen["free"]["threads"] is None and seen["free"]["cpus"] == cpus


def test_more_cores_than_the_machine_has_is_refused() -> None:
    cores = len(os.sched_getaffinity(0)) + 1
    with pytest.raises(ManifestError) as info:
        Pipeline().node("e", "Echo", capabilities={"cpu": {"cores": cores}})
    assert info.value.path == "nodes[0].capabilities.cpu.cores"
    with pytest.raises(ManifestError) as info:
        Pipeline().node("e", "Echo", capabilities={"cpu": {"arch": "sparc"}})
    assert info.value.path == "nodes[0].capabilities.cpu.arch"


def test_gpus_are_handed_out_from_the_configured_list(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[nodes]\ngpus = ["0", "1"]\n')
    pipe = (
        Pipeline("gpus", config=cfg)
        .node("a", "Environment", capabilities={"gpu": {"type": "cuda", "required": True}})
        .node("b", "Environment", capabilities={"gpu": {"type": "cuda"}})
        .node("pinned", "Environment", capabilities={"gpu": {"type": "cuda", "device": "1"}})
        .node("amd", "Environment", capabilities={"gpu": {"type": "rocm", "device": "0"}})
    )
    seen = {}
    with pipe.session() as session:
        for label in ("a", "b", "pinned", "amd"):
            session.send(Text("?"), to=label)
        for _ in range(4):
            frame = session.recv(timeout=60)
            seen[frame.source] = frame.value["env"]
    assert {seen["a"]["CUDA_VISIBLE_DEVICES"], seen["b"]["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
    assert seen["pinned"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert seen["amd"]["HIP_VISIBLE_DEVICES"] == "0"


def test_gpu_requests_this_host_cannot_meet_are_named(tmp_path: Path) -> None:
    required = {"gpu": {"type": "cuda", "required": True}}
    with pytest.raises(ManifestError) as info:
        Pipeline().node("a", "Echo", capabilities=required)
    assert info.value.path == "nodes[0].capabilities.gpu" and "[nodes] gpus" in str(info.value)
    cfg = config(tmp_path, '[nodes]\ngpus = ["0"]\n')
    with pytest.raises(ManifestError) as info:
        Pipeline(config=cfg).node("a", "Echo", capabilities={"gpu": {"device": "3"}})
    assert info.value.path == "nodes[0].capabilities.gpu.device"
    wanted = Pipeline().node("a", "Environment", capabilities={"gpu": {"type": "cuda"}})
    assert [w.path for w in wanted.warnings] == ["nodes[0].capabilities.gpu"]
    assert wanted.run([Text("?")])[0].value["env"]["CUDA_VISIBLE_DEVICES"] == ""


def test_a_requests_resource_limits_hold_over_grpc(tmp_path: Path) -> None:
    (tmp_path / "runtime.toml").write_text('[nodes]\nmodules = ["zerohop.testing"]\n')
    proc, server = start_server(tmp_path / "runtime.toml", None, metrics=True)
    try:
        hog = {"version": "v1", "nodes": [{"id": "hog", "node_type": "Hog", "params": {"mb": 100}}]}
        slow = {
            "version": "v1",
            "nodes": [{"id": "s", "node_type": "Slow", "params": {"ms": 5000}}],
        }
        echo = {"version": "v1", "nodes": [{"id": "e", "node_type": "Echo"}]}
        second = Audio(np.zeros(48_000, dtype=np.float32), 48_000)
        with Client(server.address) as client:
            memory = ResourceLimits(max_memory_bytes=200 * MB)
            with pytest.raises(RemoteError) as info:
                list(client.stream(hog, [Text("a"), Text("b"), Text("c")], limits=memory))
            assert info.value.error_type == "RESOURCE_LIMIT" and info.value.node_id == "hog"
            assert "the session's memory limit of 200 MB" in str(info.value)
            deadline = ResourceLimits(max_timeout_ms=500)
            with pytest.raises(RemoteError) as info:
                client.execute(slow, {"s": Text("a")}, limits=deadline)
            assert info.value.status == "DEADLINE_EXCEEDED" and "500 ms" in str(info.value)
            with pytest.raises(RemoteError) as info:
                list(client.stream(slow, [Text("a")], limits=deadline))
            assert "deadline of 500 ms" in str(info.value)
            samples = ResourceLimits(max_audio_samples=16_000)
            with pytest.raises(RemoteError) as info:
                client.execute(echo, {"e": second}, limits=samples)
            assert info.value.error_type == "RESOURCE_LIMIT"
            assert 'data_inputs["e"]' in str(info.value) and "48000 samples" in str(info.value)
            with pytest.raises(RemoteError, match="max_audio_samples"):
                list(client.stream(echo, [second], limits=samples))
            # Within the limits, all is as without them.
            small = Audio(np.zeros(1_000, dtype=np.float32), 48_000)
            assert len(list(client.stream(echo, [small], limits=samples))) == 1
        assert wait_until(lambda: not node_pids(server), 30) is not None
        assert server.metrics_url is not None
        hits = scrape(server.metrics_url)
        assert hits['zerohop_limits_hit_total{kind="memory"}'] == 1
        assert hits['zerohop_limits_hit_total{kind="deadline"}'] == 2
        assert hits['zerohop_limits_hit_total{kind="audio_samples"}'] == 2
    finally:
        stop_server(proc)


def test_status_shows_each_nodes_peak_and_limit() -> None:
    pipe = (
        Pipeline("status")
        .node("hog", "Hog", mb=30, capabilities={"memory_gb": 0.5})
        .node("free", "Echo")
        .connect("hog", "free")
    )
    with pipe.session() as session:
        session.send(Text("a"))
        session.recv(timeout=60)
        status = {s.node_id: s for s in session.status()}
    assert status["hog"].memory_limit == 500 * MB and status["free"].memory_limit is None
    peak = status["hog"].peak_rss_bytes
    assert peak is not None and peak >= 30 * MB, status["hog"]


@pytest.mark.parametrize("executor", ["multiprocess", "inprocess"])
def test_a_python_sessions_deadline_and_audio_cap(executor: str) -> None:
    from zerohop import Audio as AudioFrame

    pipe = Pipeline("limits", executor=executor).node("slow", "Slow", ms=5000)  # type: ignore[arg-type]
    big = AudioFrame(np.zeros(48_000, dtype=np.float32), 48_000)
    with pipe.session(deadline=1.0, max_audio_samples=16_000) as session:
        with pytest.raises(ResourceLimitError, match="max_audio_samples"):
            session.send(big)
        session.send(Text("a"))
        with pytest.raises(ResourceLimitError, match="deadline of 1 s"):
            session.recv()  # waits for a frame the node needs 5 s for
