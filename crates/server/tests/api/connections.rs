//! Connection limits (hostile clients): headers that trickle in and connections that send
//! nothing are closed after the header-read timeout; past the connection cap, new
//! connections wait until one closes, and are then served.

use crate::helpers::{spawn_app_with, AppOptions, Backend};
use agentpmt_server::ServerConfig;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(base_url: &str) -> String {
    base_url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; what it sent, or `None` when it stayed
/// open for `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_trickle_in_are_cut_off() {
    let app = spawn_app_with(
        Backend::Sqlite,
        AppOptions {
            configure: Some(|c: &mut ServerConfig| c.header_read_timeout_secs = 1),
            ..AppOptions::default()
        },
    )
    .await;
    let mut stream = TcpStream::connect(addr(&app.base_url)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    // One header line every 300 ms for 6 s: never a whole request within the timeout.
    let mut cut_off = false;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut_off = true;
            break;
        }
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(n)) => panic!(
                "the server answered a request whose headers never ended: {}",
                String::from_utf8_lossy(&probe[..n])
            ),
            Err(_) => {}
        }
    }
    if !cut_off {
        // The end of the headers: a server without the timer answers now.
        let _ = stream.write_all(b"\r\n").await;
        let answer = until_closed(&mut stream, Duration::from_secs(2)).await;
        let text = answer.map(|a| String::from_utf8_lossy(&a).into_owned());
        assert!(
            !text.as_deref().unwrap_or("").starts_with("HTTP/1.1 200"),
            "a slowloris request was served: {text:?}"
        );
        panic!("the connection was still open after 6 s of trickled headers");
    }
    // A well-behaved client is served as usual.
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_clients_wait_then_are_served() {
    let app = spawn_app_with(
        Backend::Sqlite,
        AppOptions {
            configure: Some(|c: &mut ServerConfig| {
                c.header_read_timeout_secs = 2;
                c.max_connections = 2;
            }),
            ..AppOptions::default()
        },
    )
    .await;
    // Two half-open connections (they send nothing) take both slots.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(addr(&app.base_url)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("{}/healthz", app.base_url);
    let early = tokio::time::timeout(Duration::from_millis(700), client.get(&url).send()).await;
    assert!(
        early.is_err(),
        "a third connection was served while the cap was taken"
    );
    // The header-read timer closes the idle ones; then the waiting client is served.
    for stream in &mut idle {
        let closed = until_closed(stream, Duration::from_secs(5)).await;
        assert_eq!(
            closed.as_deref(),
            Some(&[][..]),
            "an idle connection was kept"
        );
    }
    let served = tokio::time::timeout(Duration::from_secs(5), client.get(&url).send())
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert_eq!(served.status(), 200);
}

/// A body over the limit gets its 413 while the client is still sending: the server reads
/// and drops the rest (within bounds) instead of closing on a client that is writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_its_413() {
    let app = spawn_app_with(Backend::Sqlite, AppOptions::default()).await;
    let limit = app.state.config.max_body_bytes;
    let total = limit * 4;
    for path in [
        "/api/external/credits/balance",
        "/api/external/agent-help",
        "/api/external/credits/purchase",
    ] {
        let mut stream = TcpStream::connect(addr(&app.base_url)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b' '; 16 * 1024];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            stream
                .write_all(&chunk[..n])
                .await
                .unwrap_or_else(|e| panic!("{path}: the server reset a client still sending: {e}"));
            sent += n;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("an answer")
            .unwrap_or_else(|e| panic!("{path}: the answer was lost: {e}"));
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 413"), "{path}: {text}");
        assert!(text.contains("PAYLOAD_TOO_LARGE"), "{path}: {text}");
    }
}

/// Draining an oversized body is paid for by the client's address: one token of its
/// per-IP limit per body-limit's worth of bytes dropped. Afterwards its bucket is that much
/// emptier (without the charge, an address could make the server read 8 MiB per request
/// for one token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_an_oversized_body_costs_the_address_its_limit() {
    let app = spawn_app_with(
        Backend::Sqlite,
        AppOptions::configured(|c| {
            c.ip_rate_per_sec = 1;
            c.ip_rate_burst = 6;
        }),
    )
    .await;
    let limit = app.state.config.max_body_bytes;
    let body = vec![b' '; limit * 4];
    let response = app
        .http
        .post(app.url("/api/external/agent-help"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // One token for the request, four for the 4 × limit bytes drained: one is left.
    let wallet = agentpmt_protocol::PrivateKey::random()
        .address()
        .to_string();
    let mut created = 0;
    for _ in 0..6 {
        let (status, _) = app
            .post(
                "/api/external/auth/session",
                &serde_json::json!({"wallet_address": wallet}),
            )
            .await;
        if status == 200 {
            created += 1;
        }
    }
    assert_eq!(created, 1, "the drain was not charged to the address");
}

/// Opens `n` connections to `addr` (each given 1.5 s); how many the kernel completed.
async fn queued_connections(addr: &str, n: usize) -> (usize, Vec<TcpStream>) {
    let mut open = Vec::new();
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_millis(1500), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => open.push(stream),
            _ => break,
        }
    }
    (open.len(), open)
}

fn one_connection(c: &mut ServerConfig) {
    c.max_connections = 1;
}

fn small_backlog(c: &mut ServerConfig) {
    c.max_connections = 1;
    c.listen_backlog = 4;
}

/// Past the connection cap, the kernel queues new connections up to the listen backlog
/// (`--listen-backlog`). The default queues far more than the 128 of a plain bind: a flood
/// of half-open connections does not leave a well-behaved client's SYN dropped (and
/// retried only after a second); a small backlog, configured, is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listen_queue_holds_a_connection_flood() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    for (backlog, attempts, expect_all) in [(None, 300usize, true), (Some(4u32), 40, false)] {
        let app = spawn_app_with(
            Backend::Sqlite,
            AppOptions {
                configure: Some(if backlog.is_some() {
                    small_backlog
                } else {
                    one_connection
                }),
                ..AppOptions::default()
            },
        )
        .await;
        let target = addr(&app.base_url);
        // One connection takes the only slot; the others wait in the kernel's queue.
        let _held = TcpStream::connect(&target).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (queued, _open) = queued_connections(&target, attempts).await;
        if expect_all {
            assert!(somaxconn >= 300, "net.core.somaxconn is {somaxconn}");
            assert_eq!(
                queued, attempts,
                "the default listen queue overflowed after {queued} connections"
            );
        } else {
            assert!(
                queued < attempts,
                "a listen backlog of 4 queued {queued} connections"
            );
        }
    }
}
