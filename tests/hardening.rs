//! Abuse the real server over TLS: plaintext on the TLS port, slow-header clients, the connection cap,
//! slow bodies, and SIGTERM while requests are in flight (the binary itself). Synchronisation is by
//! protocol events (a `100 Continue`, a closed socket), never by sleeping.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use gpu_slicer::webhook::admission::StaticFacts;
use gpu_slicer::webhook::metrics::Metrics;
use gpu_slicer::webhook::server::{self, App, Bound, Limits};
use gpu_slicer::webhook::tls;
use gpu_slicer_core::nodepool::NodePoolIndex;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

struct Server {
    addr: SocketAddr,
    ca: String,
    _dir: tempfile::TempDir,
    /// Dropping it stops the server.
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(limits: Limits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tls::generate(&["localhost".into()], "test").unwrap();
    tls::write_bundle(dir.path(), &bundle, false).unwrap();
    let cert = Arc::new(
        tls::ReloadingCert::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap(),
    );
    let config = tls::server_config(cert).unwrap();
    let bound = Bound::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = bound.local_addr().unwrap();
    let app = App::new(
        StaticFacts {
            policy: contract_policy(),
            pools: NodePoolIndex::default(),
        },
        Metrics::new(),
        limits.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve(server::router(app), config, limits, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        ca: bundle.ca_cert,
        _dir: dir,
        _stop: stop,
    }
}

fn connector(ca: &str, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
    tls_connector(&[ca.as_bytes()], versions, &[])
}

async fn tls(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    tls_from(addr, connector, "127.0.0.1").await
}

/// A TLS connection from a chosen loopback address (127.0.0.0/8 is all this machine's), so a test can
/// play several clients.
async fn tls_from(
    addr: SocketAddr,
    connector: &TlsConnector,
    source: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

fn body() -> Vec<u8> {
    serde_json::to_vec(&review("ml-inference-embedder-0-create")).unwrap()
}

/// Reads until the peer closes (or the read fails); `Err` if that takes longer than `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> Result<(), tokio::time::error::Elapsed> {
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
}

/// Reads one HTTP/1.1 response (status line, headers, content-length body); returns the status.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<u16> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut rest = vec![0u8; len];
    s.read_exact(&mut rest).await?;
    Ok(status)
}

async fn post(s: &mut TlsStream<TcpStream>, body: &[u8]) -> std::io::Result<u16> {
    let head = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    read_response(s).await
}

#[tokio::test]
async fn plaintext_on_the_tls_port_fails_fast_and_old_protocols_are_absent() {
    let srv = start(Limits::default()).await;
    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The server answers with a TLS alert and closes: the read ends (no hang).
    let ended = closed_within(&mut tcp, Duration::from_secs(5)).await;
    assert!(ended.is_ok(), "a plaintext request hung on the TLS port");

    for versions in [
        &[&rustls::version::TLS12][..],
        &[&rustls::version::TLS13][..],
    ] {
        let mut s = tls(srv.addr, &connector(&srv.ca, versions)).await.unwrap();
        assert_eq!(post(&mut s, &body()).await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_do_not_starve_others_and_are_cut_off() {
    let limits = Limits {
        header_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let srv = start(limits).await;
    let conn = connector(&srv.ca, &[&rustls::version::TLS13]);
    // 200 clients that start a request and never finish its headers.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = tls(srv.addr, &conn).await.unwrap();
        s.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        s.flush().await.unwrap();
        slow.push(s);
    }
    // A normal client meanwhile (one keep-alive connection, as the API server uses).
    let mut normal = tls(srv.addr, &conn).await.unwrap();
    let body = body();
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        assert_eq!(post(&mut normal, &body).await.unwrap(), 200);
        times.push(t.elapsed());
    }
    times.sort();
    let p99 = times[times.len() * 99 / 100 - 1];
    eprintln!(
        "p50 {:?} p99 {p99:?} max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(
        p99 < Duration::from_millis(10),
        "p99 {p99:?} with 200 slow-header connections open"
    );
    // The header-read timeout closes every slow connection.
    for mut s in slow {
        let closed = closed_within(&mut s, Duration::from_secs(10)).await;
        assert!(closed.is_ok(), "a slow-header connection was not cut off");
    }
}

#[tokio::test]
async fn the_connection_cap_queues_further_connections() {
    let srv = start(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let conn = connector(&srv.ca, &[&rustls::version::TLS13]);
    let mut a = tls(srv.addr, &conn).await.unwrap();
    let b = tls(srv.addr, &conn).await.unwrap();
    assert_eq!(post(&mut a, &body()).await.unwrap(), 200);
    // A third connection is not served while two are open...
    let third = tokio::spawn({
        let conn = conn.clone();
        let addr = srv.addr;
        async move {
            let mut c = tls(addr, &conn).await?;
            post(&mut c, &body()).await
        }
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), async {
            while !third.is_finished() {
                tokio::task::yield_now().await
            }
        })
        .await
        .is_err(),
        "a third connection was served past the cap"
    );
    // ...and is, as soon as one closes.
    drop(b);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("served after a slot freed")
            .unwrap()
            .unwrap(),
        200
    );
}

#[tokio::test]
async fn a_body_slower_than_the_deadline_gets_408() {
    let srv = start(Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut s = tls(srv.addr, &connector(&srv.ca, &[&rustls::version::TLS13]))
        .await
        .unwrap();
    s.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"kind\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    assert_eq!(read_response(&mut s).await.unwrap(), 408);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The real binary, serving offline with the contract policy and `RUST_LOG=rust_log`, its stderr read
/// by a thread that returns every line once the process exits.
struct Binary {
    child: std::process::Child,
    addr: SocketAddr,
    ca: String,
    log: std::thread::JoinHandle<Vec<String>>,
    _dir: tempfile::TempDir,
}

fn spawn_binary(rust_log: &str) -> Binary {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--offline",
            "--policy",
            "tests/data/policies/contract.yaml",
            "--certs-dir",
        ])
        .arg(dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", rust_log)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The JSON log line that says where it listens (`gpu_slicer::cli` at info).
    // Read on a thread, so a server that never logs the line fails the test instead of hanging it.
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (found, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let log = std::thread::spawn(move || {
        let mut rest = Vec::new();
        for line in lines.map_while(Result::ok) {
            if line.contains("serving https") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = found.send(v["addr"].as_str().unwrap().parse().unwrap());
            } else {
                rest.push(line);
            }
        }
        rest
    });
    let Ok(addr) = addr_rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        panic!("the server did not log where it listens within 30 s (RUST_LOG={rust_log})");
    };
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    Binary {
        child,
        addr,
        ca,
        log,
        _dir: dir,
    }
}

fn send_sigterm(child: &std::process::Child) {
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
}

/// Waits, up to the drain period, for a clean exit.
fn wait_for_exit(child: &mut std::process::Child) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "did not exit within the drain period"
        );
        std::thread::yield_now();
    };
    assert!(status.success(), "exit status {status:?}");
}

fn audit_lines(log: &[String]) -> Vec<serde_json::Value> {
    log.iter()
        .filter(|l| l.contains(r#""target":"gpu_slicer::audit""#))
        .map(|l| serde_json::from_str(l).expect("an audit line is one JSON object"))
        .collect()
}

#[test]
fn audit_lines_follow_rust_log() {
    // Audit lines alone (the documented routing), and everything but them.
    for (rust_log, audited) in [
        ("warn,gpu_slicer::cli=info,gpu_slicer::audit=info", 1),
        ("info,gpu_slicer::audit=off", 0),
    ] {
        let Binary {
            mut child,
            addr,
            ca,
            log,
            ..
        } = spawn_binary(rust_log);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let conn = connector(&ca, &[&rustls::version::TLS13]);
            let mut s = tls(addr, &conn).await.unwrap();
            assert_eq!(post(&mut s, &body()).await.unwrap(), 200);
        });
        send_sigterm(&child);
        wait_for_exit(&mut child);
        let log = log.join().unwrap();
        assert_eq!(audit_lines(&log).len(), audited, "{rust_log}: {log:#?}");
    }
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits() {
    let Binary {
        mut child,
        addr,
        ca,
        log,
        ..
    } = spawn_binary("info");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = connector(&ca, &[&rustls::version::TLS13]);
        let body = body();
        // Eight requests in flight: headers sent, the server has started reading each body (it said
        // `100 Continue`), the bodies not yet sent.
        let mut inflight = Vec::new();
        for _ in 0..8 {
            let mut s = tls(addr, &conn).await.unwrap();
            let head = format!("POST /mutate HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len());
            s.write_all(head.as_bytes()).await.unwrap();
            assert_eq!(read_response(&mut s).await.unwrap(), 100);
            inflight.push(s);
        }
        // An idle keep-alive connection, as the API server keeps them.
        let mut idle = tls(addr, &conn).await.unwrap();
        assert_eq!(post(&mut idle, &body).await.unwrap(), 200);

        send_sigterm(&child);
        // The idle connection is closed promptly by the drain.
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.expect("idle keep-alive connection closed on shutdown");
        assert!(matches!(closed, Ok(0) | Err(_)));
        // Every in-flight request completes.
        for mut s in inflight {
            s.write_all(&body).await.unwrap();
            assert_eq!(read_response(&mut s).await.unwrap(), 200, "an in-flight request failed during the drain");
        }
    });
    wait_for_exit(&mut child);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after exit"
    );
    // Every answered admission left its audit line, written out before the exit, each one JSON
    // object whose `changes` is a list.
    let log = log.join().unwrap();
    let audit = audit_lines(&log);
    assert_eq!(audit.len(), 9, "{log:#?}");
    for line in &audit {
        assert_eq!(line["message"], "admission decision");
        assert_eq!(line["namespace"], "ml-inference");
        assert!(line["changes"].is_array(), "{line}");
    }
    assert!(
        log.last().unwrap().contains("all connections closed"),
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_client_that_says_nothing_after_the_handshake_is_closed() {
    let srv = start(Limits {
        header_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let mut s = tls(srv.addr, &connector(&srv.ca, &[&rustls::version::TLS13]))
        .await
        .unwrap();
    let closed = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(closed.is_ok(), "a silent connection was kept open");
}

/// Starts an upload that announces `length` bytes, sends a few, and stalls (the attack of issue 24: each
/// such connection used to hold a body buffer for the whole deadline). `Expect: 100-continue` makes the
/// server say when it has taken the upload (it reserves before reading the body): returns 100 then, or
/// the status it refused it with.
async fn stall_upload(s: &mut TlsStream<TcpStream>, length: usize) -> u16 {
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), read_response(s))
        .await
        .expect("the server answers the headers at once")
        .unwrap();
    if status == 100 {
        s.write_all(b"{\"kind\":").await.unwrap();
        s.flush().await.unwrap();
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_are_refused_past_the_memory_budget_and_other_clients_still_answered() {
    let srv = start(Limits {
        max_in_flight_body_bytes: 3 << 20,
        max_peer_body_bytes: 1 << 20,
        max_connection_body_bytes: 768 << 10,
        ..Limits::default()
    })
    .await;
    let conn = connector(&srv.ca, &[&rustls::version::TLS13]);
    // An attacker at 127.0.0.2: two stalled 512 KiB uploads fill its address's 1 MiB share...
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tls_from(srv.addr, &conn, "127.0.0.2").await.unwrap();
        assert_eq!(stall_upload(&mut s, 512 << 10).await, 100);
        held.push(s);
    }
    for _ in 0..3 {
        let mut s = tls_from(srv.addr, &conn, "127.0.0.2").await.unwrap();
        assert_eq!(stall_upload(&mut s, 512 << 10).await, 503);
    }
    // Large uploads from other addresses fill the process's budget up to the third kept for the heads
    // of bodies (2 of 3 MiB)...
    let mut s = tls_from(srv.addr, &conn, "127.0.0.5").await.unwrap();
    assert_eq!(stall_upload(&mut s, 700 << 10).await, 100);
    held.push(s);
    let mut s = tls_from(srv.addr, &conn, "127.0.0.6").await.unwrap();
    assert_eq!(
        stall_upload(&mut s, 700 << 10).await,
        503,
        "large bodies past two thirds of the process budget"
    );
    // ...while the API server (another address) is answered as usual.
    let mut api = tls(srv.addr, &conn).await.unwrap();
    for _ in 0..20 {
        assert_eq!(post(&mut api, &body()).await.unwrap(), 200);
    }
    // A chunked upload (no Content-Length) is reserved as it arrives: one connection cannot stream
    // past its own share either.
    let mut chunked = tls_from(srv.addr, &conn, "127.0.0.3").await.unwrap();
    chunked
        .write_all(
            b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    let chunk = vec![b' '; 64 << 10];
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..13 {
            let head = format!("{:x}\r\n", chunk.len());
            if chunked.write_all(head.as_bytes()).await.is_err()
                || chunked.write_all(&chunk).await.is_err()
                || chunked.write_all(b"\r\n").await.is_err()
            {
                break;
            }
        }
        read_response(&mut chunked).await
    })
    .await
    .expect("answered")
    .unwrap();
    assert_eq!(
        status, 503,
        "a 832 KiB chunked body on a 768 KiB connection share"
    );
    // Closing the stalled uploads gives their bytes back: the attacker's address may upload again.
    drop(held);
    let mut again = tls_from(srv.addr, &conn, "127.0.0.2").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match post(&mut again, &body()).await {
            Ok(200) => break,
            Ok(503) | Err(_) if Instant::now() < deadline => {
                again = tls_from(srv.addr, &conn, "127.0.0.2").await.unwrap();
            }
            other => panic!("after the stalled uploads closed: {other:?}"),
        }
    }
}

#[tokio::test]
async fn one_address_holds_a_bounded_number_of_connections() {
    let srv = start(Limits {
        max_connections_per_peer: 3,
        ..Limits::default()
    })
    .await;
    let conn = connector(&srv.ca, &[&rustls::version::TLS13]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tls_from(srv.addr, &conn, "127.0.0.4").await.unwrap());
    }
    // The fourth is closed before its handshake completes.
    assert!(tls_from(srv.addr, &conn, "127.0.0.4").await.is_err());
    // Another address is unaffected, and a closed connection frees its slot.
    let mut other = tls(srv.addr, &conn).await.unwrap();
    assert_eq!(post(&mut other, &body()).await.unwrap(), 200);
    open.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        match tls_from(srv.addr, &conn, "127.0.0.4").await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => tokio::task::yield_now().await,
            Err(e) => panic!("slot not freed: {e}"),
        }
    };
    assert_eq!(post(&mut s, &body()).await.unwrap(), 200);
}

/// An HTTP/2 client connection over TLS (ALPN h2).
async fn h2_client(
    srv: &Server,
) -> (
    hyper::client::conn::http2::SendRequest<
        http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>,
    >,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let h2 = tls_connector(&[srv.ca.as_bytes()], rustls::DEFAULT_VERSIONS, &[b"h2"]);
    let stream = tls(srv.addr, &h2).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    (send, tokio::spawn(conn))
}

type H2Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// Posts the captured review on an HTTP/2 connection; the status.
async fn post_h2(send: &mut hyper::client::conn::http2::SendRequest<H2Body>) -> u16 {
    let req = axum::http::Request::post("https://localhost/mutate")
        .body(full(body()))
        .unwrap();
    send.send_request(req).await.unwrap().status().as_u16()
}

fn full(bytes: Vec<u8>) -> H2Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes::Bytes::from(bytes)).boxed()
}

/// A body that sends `first` and then nothing until the sender is dropped.
fn stalled(first: Vec<u8>) -> (H2Body, tokio::sync::mpsc::Sender<()>) {
    use http_body_util::BodyExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
    let stream = futures_util::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        match first {
            Some(b) => Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(b))),
                (None, rx),
            )),
            None => {
                let _ = rx.recv().await;
                None
            }
        }
    });
    (http_body_util::StreamBody::new(stream).boxed(), tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_share_their_connections_budget_and_idle_connections_close() {
    let srv = start(Limits {
        max_connection_body_bytes: 1 << 20,
        max_concurrent_streams: 8,
        idle_timeout: Duration::from_millis(400),
        ..Limits::default()
    })
    .await;
    let (send, conn) = h2_client(&srv).await;
    // Three stalled 400 KiB streams on one connection: the third passes the connection's 1 MiB share.
    let mut stalls = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let (body, tx) = stalled(b"{\"kind\":".to_vec());
        let req = axum::http::Request::post("https://localhost/mutate")
            .header("content-length", (400 << 10).to_string())
            .body(body)
            .unwrap();
        let mut send = send.clone();
        answers.push(tokio::spawn(async move { send.send_request(req).await }));
        stalls.push(tx);
    }
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            for a in &answers {
                if a.is_finished() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "no stream was refused");
    let mut statuses = Vec::new();
    for a in answers {
        if a.is_finished() {
            statuses.push(a.await.unwrap().unwrap().status().as_u16());
        }
    }
    assert_eq!(
        statuses,
        vec![503],
        "exactly one of three streams is over the share"
    );
    // The connection still serves ordinary reviews beside the stalls (800 KiB of its 1 MiB held).
    let mut send2 = send.clone();
    assert_eq!(post_h2(&mut send2).await, 200);
    drop(stalls);
    // Idle (no new request) for the idle timeout: the server says GOAWAY and the connection ends.
    drop(send);
    drop(send2);
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
}

#[tokio::test]
async fn an_idle_http2_connection_that_keeps_its_handle_is_closed_by_the_server() {
    let srv = start(Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let (mut send, conn) = h2_client(&srv).await;
    assert_eq!(post_h2(&mut send).await, 200);
    // The client keeps the connection (as the API server's pool does); the server closes it.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection was never closed");
    drop(send);
}
