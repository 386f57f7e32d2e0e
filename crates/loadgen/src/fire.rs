//! The HTTP phase: keep-alive HTTP/1.1 connections (one tokio task each), fed from a shared
//! request counter, either closed-loop (each connection sends its next request as soon as
//! the previous answer is in) or open-loop at a fixed offered rate.
//!
//! Open loop: request `i` is due at `start + i / rate`. A pacer thread releases one permit
//! per due request (it sleeps with the OS timer, ~0.1 ms precise, where tokio's timer has
//! 1 ms granularity); a connection takes a permit, then the next index. Latency is measured
//! from the due time, not from the actual send, so a server (or load generator) that falls
//! behind shows the queueing delay instead of hiding it (no coordinated omission). The
//! service time (from the actual send) is recorded as well.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// `POST` route of the signed balance request.
pub const BALANCE_PATH: &str = "/api/external/credits/balance";
/// `POST` route that issues session nonces.
pub const SESSION_PATH: &str = "/api/external/auth/session";

/// Highest latency the histograms track: one minute, in microseconds.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Longest error response body kept as a sample.
const MAX_SAMPLE: usize = 400;

/// The client side of one HTTP/1.1 connection.
pub type Sender = SendRequest<Full<Bytes>>;

/// The server under test: where to connect and what to put in `Host`.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    addr: SocketAddr,
    host: HeaderValue,
    /// Path prefix of the API (empty, or `/prefix` without a trailing slash).
    base_path: String,
}

impl Target {
    /// Parses `http://host[:port][/prefix]` and resolves the host once.
    pub fn parse(url: &str) -> Result<Target> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("only http:// is supported (got {other}://)"),
            None => bail!("the server URL needs a scheme: http://host:port"),
        }
        let authority = uri.authority().context("the server URL has no host")?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = (authority.host().trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {}", authority.host()))?
            .next()
            .with_context(|| format!("{} resolves to no address", authority.host()))?;
        Ok(Target {
            url: url.trim_end_matches('/').to_owned(),
            addr,
            host: HeaderValue::from_str(authority.as_str())?,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The URL as given (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address requests go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `Host` header value.
    pub fn host(&self) -> &str {
        self.host.to_str().unwrap_or_default()
    }

    /// Opens a TCP connection (TCP_NODELAY), from the local address `from` if given.
    pub async fn tcp_from(&self, from: Option<IpAddr>) -> Result<TcpStream> {
        let stream = match from {
            None => TcpStream::connect(self.addr).await,
            Some(ip) => {
                let socket = match ip {
                    IpAddr::V4(_) => TcpSocket::new_v4()?,
                    IpAddr::V6(_) => TcpSocket::new_v6()?,
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(self.addr).await
            }
        }
        .with_context(|| format!("cannot connect to {}", self.addr))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Opens a keep-alive connection (TCP_NODELAY) and spawns its driver task.
    pub async fn connect(&self) -> Result<Sender> {
        self.connect_from(None).await
    }

    /// Like [`Target::connect`], from the local address `from` if given.
    pub async fn connect_from(&self, from: Option<IpAddr>) -> Result<Sender> {
        let stream = self.tcp_from(from).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Errors surface on the sender side; the driver just ends.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Opens `count` connections, one after the other.
    pub async fn connect_many(&self, count: usize) -> Result<Vec<Sender>> {
        let mut senders = Vec::with_capacity(count);
        for i in 0..count {
            let sender = self.connect().await.with_context(|| {
                format!(
                    "opening connection {} of {count} (check `ulimit -n` on both sides)",
                    i + 1
                )
            })?;
            senders.push(sender);
        }
        Ok(senders)
    }

    /// A JSON `POST` to `path` (below the base path).
    pub fn post(&self, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        self.request(hyper::Method::POST, path, body)
    }

    /// A request with a JSON body (empty for `GET`) to `path` (below the base path).
    pub fn request(&self, method: hyper::Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = format!("{}{path}", self.base_path)
            .parse()
            .expect("API paths are valid URIs");
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        request
    }
}

/// Sends one request on `sender` and reads the whole response.
pub async fn exchange(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Each connection sends as soon as its previous answer arrived.
    Closed,
    /// Fixed offered rate, requests per second.
    Rate(f64),
}

/// Failed requests of one kind: how many, and the first answer seen.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ErrorTally {
    pub count: u64,
    pub sample: String,
}

/// What one firing produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Microseconds from the due time (closed loop: from the send) to the full response.
    pub latency: Histogram<u64>,
    /// Microseconds from the actual send to the full response.
    pub service: Histogram<u64>,
    /// From the start to the last response.
    pub elapsed: Duration,
    /// Answers with status 200.
    pub ok: u64,
    /// Other answers by status (`"409"`, ...) and transport failures (`"transport"`).
    pub errors: BTreeMap<String, ErrorTally>,
    /// Requests never sent (every connection failed).
    pub unsent: u64,
}

impl Outcome {
    fn empty() -> Outcome {
        Outcome {
            latency: new_histogram(),
            service: new_histogram(),
            elapsed: Duration::ZERO,
            ok: 0,
            errors: BTreeMap::new(),
            unsent: 0,
        }
    }

    fn error(&mut self, kind: String, sample: impl FnOnce() -> String) {
        let tally = self.errors.entry(kind).or_default();
        if tally.count == 0 {
            let mut text = sample();
            if text.len() > MAX_SAMPLE {
                let mut cut = MAX_SAMPLE;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push('…');
            }
            tally.sample = text;
        }
        tally.count += 1;
    }

    fn merge(&mut self, other: Outcome) {
        self.latency
            .add(&other.latency)
            .expect("histograms share their bounds");
        self.service
            .add(&other.service)
            .expect("histograms share their bounds");
        self.ok += other.ok;
        for (kind, tally) in other.errors {
            let mine = self.errors.entry(kind).or_default();
            if mine.count == 0 {
                mine.sample = tally.sample;
            }
            mine.count += tally.count;
        }
    }

    /// Failed requests of every kind, unsent ones included.
    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|t| t.count).sum::<u64>() + self.unsent
    }
}

/// A histogram of microseconds from 1 µs to a minute, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Releases permits of `rate` requests per second from `start`, `count` in all, then one
/// more per connection so that idle connections see the end.
#[derive(Debug)]
struct Pacer {
    permits: Semaphore,
    start: Instant,
    rate: f64,
}

impl Pacer {
    fn due(&self, index: usize) -> Instant {
        self.start + Duration::from_secs_f64(index as f64 / self.rate)
    }

    fn run(&self, count: usize, connections: usize) {
        let mut released = 0;
        while released < count {
            let elapsed = Instant::now()
                .saturating_duration_since(self.start)
                .as_secs_f64();
            let due = ((elapsed * self.rate).floor() as usize + 1).min(count);
            if due > released {
                self.permits.add_permits(due - released);
                released = due;
            }
            if released < count {
                std::thread::sleep(self.due(released).saturating_duration_since(Instant::now()));
            }
        }
        self.permits.add_permits(connections);
    }
}

/// Sends `bodies[range]` to `path` over `connections`, paced by `pace`.
/// Returns the outcome and the connections still usable.
pub async fn fire(
    target: &Arc<Target>,
    path: &Arc<str>,
    connections: Vec<Sender>,
    bodies: &Arc<Vec<Bytes>>,
    range: Range<usize>,
    pace: Pace,
) -> (Outcome, Vec<Sender>) {
    let count = range.len();
    let next = Arc::new(AtomicUsize::new(range.start));
    let start = Instant::now();
    let pacer = match pace {
        Pace::Closed => None,
        Pace::Rate(rate) => Some(Arc::new(Pacer {
            permits: Semaphore::new(0),
            start,
            rate,
        })),
    };
    let pacer_thread = pacer.clone().map(|p| {
        let n = connections.len();
        std::thread::spawn(move || p.run(count, n))
    });
    let workers: Vec<_> = connections
        .into_iter()
        .map(|sender| {
            let job = Job {
                target: target.clone(),
                path: path.clone(),
                bodies: bodies.clone(),
                first: range.start,
                end: range.end,
                next: next.clone(),
                pacer: pacer.clone(),
            };
            tokio::spawn(job.run(sender))
        })
        .collect();

    let mut outcome = Outcome::empty();
    let mut alive = Vec::new();
    for worker in workers {
        let (part, sender) = worker.await.expect("a connection task panicked");
        outcome.merge(part);
        alive.extend(sender);
    }
    outcome.elapsed = start.elapsed();
    if let Some(thread) = pacer_thread {
        thread.join().expect("the pacer thread panicked");
    }
    let sent = next.load(Ordering::Relaxed).min(range.end) - range.start;
    outcome.unsent = (count - sent) as u64;
    (outcome, alive)
}

/// What one connection task needs.
struct Job {
    target: Arc<Target>,
    path: Arc<str>,
    bodies: Arc<Vec<Bytes>>,
    first: usize,
    end: usize,
    next: Arc<AtomicUsize>,
    pacer: Option<Arc<Pacer>>,
}

impl Job {
    async fn run(self, sender: Sender) -> (Outcome, Option<Sender>) {
        let mut out = Outcome::empty();
        let mut sender = Some(sender);
        loop {
            if let Some(pacer) = &self.pacer {
                match pacer.permits.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
            }
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            if index >= self.end {
                break;
            }
            let due = self.pacer.as_ref().map(|p| p.due(index - self.first));
            let conn = match sender.as_mut() {
                Some(conn) => conn,
                None => match self.target.connect().await {
                    Ok(fresh) => sender.insert(fresh),
                    Err(e) => {
                        out.error("transport".into(), || format!("{e:#}"));
                        continue;
                    }
                },
            };
            let request = self.target.post(&self.path, self.bodies[index].clone());
            let sent = Instant::now();
            match exchange(conn, request).await {
                Ok((status, body)) => {
                    let done = Instant::now();
                    out.latency
                        .saturating_record(micros(done - due.unwrap_or(sent)));
                    out.service.saturating_record(micros(done - sent));
                    if status == StatusCode::OK {
                        out.ok += 1;
                    } else {
                        out.error(status.as_u16().to_string(), || {
                            String::from_utf8_lossy(&body).into_owned()
                        });
                    }
                }
                Err(e) => {
                    out.error("transport".into(), || format!("{e:#}"));
                    sender = None;
                }
            }
        }
        (out, sender)
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_urls() {
        let t = Target::parse("http://127.0.0.1:18181/").unwrap();
        assert_eq!(t.url(), "http://127.0.0.1:18181");
        assert_eq!(t.addr, "127.0.0.1:18181".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:18181");
        assert_eq!(t.post(BALANCE_PATH, Bytes::new()).uri(), BALANCE_PATH);

        let t = Target::parse("http://[::1]/base/").unwrap();
        assert_eq!(t.addr, "[::1]:80".parse().unwrap());
        assert_eq!(
            t.post(SESSION_PATH, Bytes::new()).uri(),
            "/base/api/external/auth/session"
        );

        assert!(Target::parse("https://127.0.0.1:1").is_err());
        assert!(Target::parse("127.0.0.1:8080").is_err());
    }

    #[test]
    fn pacer_releases_every_request_then_one_per_connection() {
        let pacer = Pacer {
            permits: Semaphore::new(0),
            start: Instant::now(),
            rate: 20_000.0,
        };
        pacer.run(100, 3);
        assert_eq!(pacer.permits.available_permits(), 103);
        assert!(pacer.start.elapsed() >= Duration::from_secs_f64(99.0 / 20_000.0));
        assert_eq!(pacer.due(40) - pacer.start, Duration::from_millis(2));
    }
}
