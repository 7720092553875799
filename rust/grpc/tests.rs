//! The server's pieces, and the whole server on loopback driven by tonic's client with
//! a pure-Rust planner (native nodes only: no Python here).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use super::limits::{Admission, Limits};
use super::plan::{failing_node, manifest_json, Plan, Planner};
use super::proto::pipeline_execution_service_client::PipelineExecutionServiceClient;
use super::proto::streaming_pipeline_service_client::StreamingPipelineServiceClient;
use super::proto::{
    data_buffer::DataType, execute_response::Outcome, stream_control::Command,
    stream_request::Request as StreamReq, stream_response::Response as StreamResp, AudioBuffer,
    AudioFormat, Connection, DataBuffer, DataChunk, ErrorType, ExecuteRequest, NodeManifest,
    PipelineManifest, StreamControl, StreamInit, StreamRequest, VersionRequest,
};
use super::server::{serve, Bound, Control, ServerConfig};
use crate::error::{Error, Result};
use crate::executor::{ChannelConfig, Graph, LaunchSpec, SessionConfig, SpawnMethod, Timing};

/// Plans manifests of native nodes only.
struct NativePlanner;

impl Planner for NativePlanner {
    fn plan(&self, manifest_json: &str) -> Result<Plan> {
        let doc: Value = serde_json::from_str(manifest_json).expect("valid JSON");
        let known = self.node_types()?;
        let mut nodes = Vec::new();
        for (i, node) in doc["nodes"].as_array().expect("nodes").iter().enumerate() {
            let node_type = node["node_type"].as_str().unwrap_or_default();
            if !known.iter().any(|k| k == node_type) {
                return Err(Error::Manifest {
                    path: format!("nodes[{i}].node_type"),
                    message: format!("unknown node type '{node_type}'"),
                });
            }
            nodes.push(json!({
                "id": node["id"], "node_type": node_type, "params": node["params"],
                "placement": "native",
            }));
        }
        let def = json!({"name": "test", "nodes": nodes, "connections": doc["connections"]});
        Ok(Plan {
            graph: Graph::from_json(&def.to_string())?,
            config: SessionConfig {
                channel: ChannelConfig::default(),
                timing: Timing {
                    init_timeout: Duration::from_secs(5),
                    grace: Duration::from_secs(1),
                    term_grace: Duration::from_secs(1),
                    liveness_timeout: Some(Duration::from_secs(10)),
                },
                launch: LaunchSpec {
                    program: "/bin/false".into(),
                    args: Vec::new(),
                    env: Vec::new(),
                    cwd: None,
                },
                spawn_method: SpawnMethod::Exec,
                max_processes: None,
                heartbeat_secs: 1.0,
                imports: Vec::new(),
                sys_path: Vec::new(),
                hosts: Default::default(),
                session_memory_limit: None,
            },
            warnings: Vec::new(),
        })
    }

    fn node_types(&self) -> Result<Vec<String>> {
        Ok(crate::nodes::registry()
            .iter()
            .map(|info| info.node_type.to_owned())
            .collect())
    }
}

fn node(id: &str, node_type: &str, params: Value) -> NodeManifest {
    NodeManifest {
        id: id.into(),
        node_type: node_type.into(),
        params: params.to_string(),
        ..NodeManifest::default()
    }
}

fn chain(nodes: Vec<NodeManifest>) -> PipelineManifest {
    let connections = nodes
        .windows(2)
        .map(|pair| Connection {
            from: pair[0].id.clone(),
            to: pair[1].id.clone(),
        })
        .collect();
    PipelineManifest {
        version: "v1".into(),
        metadata: None,
        nodes,
        connections,
    }
}

fn audio(samples: &[f32], rate: u32) -> DataBuffer {
    DataBuffer {
        data_type: Some(DataType::Audio(AudioBuffer {
            samples: samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
            sample_rate: rate,
            channels: 1,
            format: AudioFormat::F32 as i32,
            num_samples: samples.len() as u64,
            metadata_json: None,
        })),
        metadata: Default::default(),
    }
}

fn samples(buffer: &DataBuffer) -> Vec<f32> {
    match &buffer.data_type {
        Some(DataType::Audio(a)) => a
            .samples
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => panic!("not audio: {other:?}"),
    }
}

#[test]
fn manifest_json_parses_params_and_names_bad_ones() {
    let mut m = chain(vec![
        node("a", "PassThrough", json!({})),
        node("b", "AudioChunkerNode", json!({"chunk_size": 4})),
    ]);
    m.nodes[0].params = String::new();
    let doc: Value = serde_json::from_str(&manifest_json(&m).unwrap()).unwrap();
    assert_eq!(doc["nodes"][0]["params"], json!({}));
    assert_eq!(doc["nodes"][1]["params"], json!({"chunk_size": 4}));
    assert_eq!(doc["connections"], json!([{"from": "a", "to": "b"}]));
    m.nodes[1].params = "{not json".into();
    let err = manifest_json(&m).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("nodes[1].params: not valid JSON"),
        "{err}"
    );
    assert_eq!(failing_node(&err, Some(&m)), "b");
}

#[test]
fn admission_enforces_the_caps_and_gives_back_on_drop() {
    let admission = Admission::new(Limits {
        max_sessions: 2,
        max_processes: 3,
        max_nodes_per_session: 5,
        max_payload: 1024,
    });
    let err = admission.admit(6, 0).err().expect("over the node cap");
    assert!(
        err.to_string().contains("server.max_nodes_per_session"),
        "{err}"
    );
    assert_eq!(admission.sessions(), 0);
    let first = admission.admit(5, 2).unwrap();
    let err = admission.admit(2, 2).err().expect("over the process cap");
    assert!(err.to_string().contains("server.max_processes"), "{err}");
    let second = admission.admit(1, 1).unwrap();
    let err = admission.admit(1, 0).err().expect("over the session cap");
    assert!(err.to_string().contains("server.max_sessions"), "{err}");
    drop(first);
    assert_eq!(admission.sessions(), 1);
    let _third = admission.admit(2, 2).unwrap();
    drop(second);
    assert_eq!(admission.sessions(), 1);
}

/// The server's per-connection and per-stream deadlines and caps.
struct Caps {
    idle_timeout: Duration,
    max_connections: usize,
    handshake_timeout: Duration,
    max_buffered: usize,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            idle_timeout: Duration::from_secs(60),
            max_connections: 64,
            handshake_timeout: Duration::from_secs(10),
            max_buffered: 16 << 20,
        }
    }
}

/// A server on a free loopback port, stopped when dropped.
struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    drain: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl TestServer {
    fn start(token: Option<&str>, max_sessions: usize) -> TestServer {
        TestServer::with(token, max_sessions, Caps::default())
    }

    fn with(token: Option<&str>, max_sessions: usize, caps: Caps) -> TestServer {
        let stop = Arc::new(AtomicBool::new(false));
        let drain = Arc::new(AtomicBool::new(false));
        let (bound, addr) = mpsc::channel();
        let cfg = ServerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            token: token.map(Into::into),
            limits: Limits {
                max_sessions,
                max_processes: 0,
                max_nodes_per_session: 0,
                max_payload: 1 << 20,
            },
            metrics_every: 10,
            file_dirs: vec![],
            idle_timeout: caps.idle_timeout,
            max_connections: caps.max_connections,
            handshake_timeout: caps.handshake_timeout,
            max_buffered_bytes_per_stream: caps.max_buffered,
            drain_timeout: Duration::from_secs(30),
            metrics_port: None,
            tls: None,
        };
        let flag = Arc::clone(&stop);
        let draining = Arc::clone(&drain);
        let thread = std::thread::spawn(move || {
            let mut on_bound = |addr: Bound| {
                bound.send(addr.grpc).expect("test waits");
                Ok(())
            };
            let control = || match flag.load(Ordering::Acquire) {
                true => Err(Error::Interrupted),
                false if draining.load(Ordering::Acquire) => Ok(Control::Drain),
                false => Ok(Control::Serve),
            };
            serve(Arc::new(NativePlanner), cfg, &mut on_bound, &control)
        });
        let addr = addr.recv_timeout(Duration::from_secs(10)).expect("bound");
        TestServer {
            addr,
            stop,
            drain,
            thread: Some(thread),
        }
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let result = thread.join().unwrap();
            assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[test]
fn version_batch_and_token() {
    let server = TestServer::start(Some("t0ken"), 4);
    block_on(async {
        let mut client = PipelineExecutionServiceClient::new(server.channel().await);
        let err = client
            .get_version(VersionRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        let err = client
            .get_version(authed(VersionRequest::default(), "nope"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        let version = client
            .get_version(authed(VersionRequest::default(), "t0ken"))
            .await
            .unwrap()
            .into_inner();
        let types = version.version_info.unwrap().supported_node_types;
        assert!(types.iter().any(|t| t == "PassThrough"), "{types:?}");

        let input: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).sin()).collect();
        let request = ExecuteRequest {
            manifest: Some(chain(vec![
                node("chunk", "AudioChunkerNode", json!({"chunk_size": 300})),
                node("out", "PassThrough", json!({})),
            ])),
            data_inputs: [("chunk".to_owned(), audio(&input, 16000))].into(),
            ..ExecuteRequest::default()
        };
        let response = client
            .execute_pipeline(authed(request, "t0ken"))
            .await
            .unwrap()
            .into_inner();
        let Some(Outcome::Result(result)) = response.outcome else {
            panic!("{response:?}")
        };
        // Four chunks (the last one padded or not) joined back into one buffer.
        let out = samples(&result.data_outputs["out"]);
        assert_eq!(&out[..1000], &input[..]);
        assert_eq!(result.node_results.len(), 2);

        let request = ExecuteRequest {
            manifest: Some(chain(vec![node("x", "NoSuchNode", json!({}))])),
            ..ExecuteRequest::default()
        };
        let response = client
            .execute_pipeline(authed(request, "t0ken"))
            .await
            .unwrap()
            .into_inner();
        let Some(Outcome::Error(error)) = response.outcome else {
            panic!("{response:?}")
        };
        assert_eq!(error.error_type, ErrorType::Validation as i32);
        assert_eq!(error.failing_node_id, "x");
        assert_eq!(error.context, "nodes[0].node_type");
    });
}

fn stream_requests(chunks: usize) -> Vec<StreamRequest> {
    let init = StreamRequest {
        request: Some(StreamReq::Init(StreamInit {
            manifest: Some(chain(vec![
                node("chunk", "AudioChunkerNode", json!({"chunk_size": 160})),
                node("out", "PassThrough", json!({})),
            ])),
            ..StreamInit::default()
        })),
    };
    let data = (0..chunks).map(|i| StreamRequest {
        request: Some(StreamReq::DataChunk(DataChunk {
            node_id: "chunk".into(),
            buffer: Some(audio(&[i as f32; 320], 16000)),
            sequence: i as u64,
            ..DataChunk::default()
        })),
    });
    let close = StreamRequest {
        request: Some(StreamReq::Control(StreamControl {
            command: Command::Close as i32,
        })),
    };
    std::iter::once(init).chain(data).chain([close]).collect()
}

#[test]
fn stream_ready_results_closed_and_the_session_cap() {
    let server = TestServer::start(None, 1);
    block_on(async {
        let mut client = StreamingPipelineServiceClient::new(server.channel().await);
        let mut responses = client
            .stream_pipeline(tokio_stream::iter(stream_requests(5)))
            .await
            .unwrap()
            .into_inner();
        let mut kinds = Vec::new();
        let mut values = Vec::new();
        while let Some(response) = responses.message().await.unwrap() {
            match response.response.unwrap() {
                StreamResp::Result(result) => {
                    kinds.push("result");
                    assert!(result.processing_time_ms > 0.0 && result.processing_time_ms < 5e3);
                    values.extend(samples(&result.data_outputs["out"]));
                }
                StreamResp::Ready(ready) => {
                    assert_eq!(ready.session_id.len(), 32);
                    kinds.push("ready")
                }
                StreamResp::Closed(closed) => {
                    assert_eq!(closed.reason, "completed");
                    kinds.push("closed")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(kinds.first(), Some(&"ready"));
        assert_eq!(kinds.last(), Some(&"closed"));
        assert_eq!(kinds.iter().filter(|k| **k == "result").count(), 10);
        let expected: Vec<f32> = (0..5).flat_map(|i| [i as f32; 320]).collect();
        assert_eq!(values, expected);

        // One session at a time: a stream that is held open blocks a second one.
        let (hold, held) = tokio::sync::mpsc::channel(1);
        hold.send(stream_requests(0).remove(0)).await.unwrap();
        let mut first = client
            .stream_pipeline(tokio_stream::wrappers::ReceiverStream::new(held))
            .await
            .unwrap()
            .into_inner();
        let ready = first.message().await.unwrap().unwrap();
        assert!(matches!(ready.response, Some(StreamResp::Ready(_))));
        let mut second = client
            .stream_pipeline(tokio_stream::iter(stream_requests(1)))
            .await
            .unwrap()
            .into_inner();
        let mut statuses = Vec::new();
        loop {
            match second.message().await {
                Ok(Some(response)) => {
                    let Some(StreamResp::Error(error)) = response.response else {
                        panic!("{response:?}")
                    };
                    assert_eq!(error.error_type, ErrorType::ResourceLimit as i32);
                }
                Ok(None) => break,
                Err(status) => {
                    statuses.push(status.code());
                    break;
                }
            }
        }
        assert_eq!(statuses, [Code::ResourceExhausted]);
        drop(hold);
        while first.message().await.unwrap().is_some() {}
    });
}

/// A stream whose client sends its StreamInit and then nothing ends once the idle
/// timeout has passed (ErrorResponse, then DEADLINE_EXCEEDED) and gives its session
/// slot back: with one slot, the next stream is served. A client silent from the start
/// is ended the same way.
#[test]
fn an_idle_stream_ends_and_frees_its_slot() {
    let caps = Caps {
        idle_timeout: Duration::from_millis(500),
        ..Caps::default()
    };
    let server = TestServer::with(None, 1, caps);
    block_on(async {
        let mut client = StreamingPipelineServiceClient::new(server.channel().await);
        for opening in [Some(stream_requests(0).remove(0)), None] {
            let (hold, held) = tokio::sync::mpsc::channel(1);
            if let Some(init) = opening {
                hold.send(init).await.unwrap();
            }
            let mut silent = client
                .stream_pipeline(tokio_stream::wrappers::ReceiverStream::new(held))
                .await
                .unwrap()
                .into_inner();
            let mut errors = Vec::new();
            let status = loop {
                match silent.message().await {
                    Ok(Some(response)) => match response.response.unwrap() {
                        StreamResp::Error(error) => errors.push(error),
                        StreamResp::Ready(_) => {}
                        other => panic!("{other:?}"),
                    },
                    Ok(None) => panic!("the stream ended without a status"),
                    Err(status) => break status,
                }
            };
            assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
            assert!(
                status.message().contains("server.idle_timeout_secs"),
                "{status:?}"
            );
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].error_type, ErrorType::ResourceLimit as i32);
            drop(hold);
        }
        // The slot is free again: a normal stream runs to its end.
        let mut responses = client
            .stream_pipeline(tokio_stream::iter(stream_requests(2)))
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(response) = responses.message().await.unwrap() {
            last = response.response;
        }
        assert!(matches!(last, Some(StreamResp::Closed(_))), "{last:?}");
    });
}

/// A TCP connection that never speaks is closed after the handshake timeout; past
/// `max_connections` a connection is closed at once; a real client is served once the
/// silent ones are gone.
#[test]
fn silent_connections_time_out_and_the_cap_refuses_the_rest() {
    use std::io::Read;
    use std::net::TcpStream;

    let caps = Caps {
        max_connections: 2,
        handshake_timeout: Duration::from_millis(300),
        ..Caps::default()
    };
    let server = TestServer::with(None, 4, caps);
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // Both slots are taken (the server has accepted them) before the third comes.
    std::thread::sleep(Duration::from_millis(100));
    let mut third = TcpStream::connect(server.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let refused = third.read(&mut [0u8; 16]);
    assert!(matches!(refused, Ok(0)) || refused.is_err(), "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );
    for mut socket in silent {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        // The server answers the client preface it never got with nothing, or its own
        // settings frame, and then closes: read until the end.
        let closed = loop {
            match socket.read(&mut buf) {
                Ok(0) | Err(_) => break started.elapsed(),
                Ok(_) => continue,
            }
        };
        assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
    }
    block_on(async {
        let mut client = PipelineExecutionServiceClient::new(server.channel().await);
        client.get_version(VersionRequest::default()).await.unwrap();
    });
}

/// A drain: health NOT_SERVING overall and per service, new calls UNAVAILABLE, the
/// running stream goes on to its end, and then `serve` returns by itself.
#[test]
fn a_drain_refuses_new_calls_and_lets_running_streams_end() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus as Status, HealthCheckRequest};

    let mut server = TestServer::start(None, 4);
    block_on(async {
        let channel = server.channel().await;
        let mut health = HealthClient::new(channel.clone());
        let check = |service: &str| HealthCheckRequest {
            service: service.into(),
        };
        let services = [
            "",
            "remotemedia.v1.PipelineExecutionService",
            "remotemedia.v1.StreamingPipelineService",
        ];
        for service in services {
            let status = health.check(check(service)).await.unwrap().into_inner();
            assert_eq!(status.status, Status::Serving as i32, "{service}");
        }
        let mut client = StreamingPipelineServiceClient::new(channel);
        let mut requests = stream_requests(1).into_iter();
        let (send, held) = tokio::sync::mpsc::channel(4);
        send.send(requests.next().unwrap()).await.unwrap();
        let mut running = client
            .stream_pipeline(tokio_stream::wrappers::ReceiverStream::new(held))
            .await
            .unwrap()
            .into_inner();
        let ready = running.message().await.unwrap().unwrap();
        assert!(matches!(ready.response, Some(StreamResp::Ready(_))));

        server.drain.store(true, Ordering::Release);
        let mut refused = false;
        for _ in 0..100 {
            let status = health.check(check("")).await.unwrap().into_inner();
            if status.status == Status::NotServing as i32 {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(refused, "health still SERVING during the drain");
        for service in services {
            let status = health.check(check(service)).await.unwrap().into_inner();
            assert_eq!(status.status, Status::NotServing as i32, "{service}");
        }
        let err = client
            .stream_pipeline(tokio_stream::iter(stream_requests(1)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("draining"), "{err:?}");

        // The running stream goes on: its chunk, its results, its close.
        for request in requests {
            send.send(request).await.unwrap();
        }
        let mut results = 0;
        while let Some(response) = running.message().await.unwrap() {
            match response.response.unwrap() {
                StreamResp::Result(_) => results += 1,
                StreamResp::Closed(closed) => assert_eq!(closed.reason, "completed"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(results, 2);
    });
    // Its last session gone, the server stops by itself.
    let thread = server.thread.take().unwrap();
    let began = Instant::now();
    while !thread.is_finished() {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the drain did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(thread.join().unwrap().is_ok());
}
