//! The load generator's side: a minimal HTTP/1.1 keep-alive client (a request line out, a
//! `Content-Length` body back), closed- and open-loop drivers, and a constant-memory latency
//! histogram. The client is deliberately tiny: a general-purpose client costs more CPU per request
//! than the server under test, and on a machine with few cores that would cap every configuration
//! at the generator's speed and hide the differences the test is after.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Latencies in 1 µs buckets up to 100 ms (then one overflow bucket): constant memory whatever the
/// number of requests.
#[derive(Clone)]
pub(crate) struct Histogram {
    buckets: Vec<u32>,
    pub(crate) count: u64,
}

impl Histogram {
    const MAX_US: usize = 100_000;

    pub(crate) fn new() -> Self {
        Histogram {
            buckets: vec![0; Self::MAX_US + 1],
            count: 0,
        }
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(Self::MAX_US as u128) as usize;
        self.buckets[us] += 1;
        self.count += 1;
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
    }

    pub(crate) fn percentile(&self, p: f64) -> u32 {
        let target = ((self.count as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (us, n) in self.buckets.iter().enumerate() {
            seen += *n as u64;
            if seen >= target {
                return us as u32;
            }
        }
        Self::MAX_US as u32
    }
}

/// One keep-alive connection.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    line: String,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            line: String::with_capacity(64),
        })
    }

    /// `GET path`; returns the status once the whole response is read.
    pub(crate) async fn get(&mut self, path: &str) -> std::io::Result<u16> {
        self.line.clear();
        self.line.push_str("GET ");
        self.line.push_str(path);
        self.line.push_str(" HTTP/1.1\r\nHost: loadtest\r\n\r\n");
        self.stream.write_all(self.line.as_bytes()).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(invalid)?;
        let status = head
            .get(9..12)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .ok_or_else(|| invalid("the response has no Content-Length"))?;
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        Ok(status)
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn invalid(e: impl ToString) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// Closed loop: `concurrency` connections send `n` requests in all, each waiting for its answer.
pub(crate) async fn closed_loop(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
) -> (Histogram, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(n.max(1)) {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await.expect("connect");
            let mut lat = Histogram::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return lat;
                }
                let t = Instant::now();
                let status = conn.get(&format!("/work/{i}")).await.expect("request");
                assert_eq!(status, 200, "the server answered {status}");
                lat.record(t.elapsed());
            }
        }));
    }
    let mut all = Histogram::new();
    for t in tasks {
        all.merge(&t.await.expect("client task"));
    }
    (all, start.elapsed())
}

/// Open loop: requests scheduled at a fixed rate, each on a free connection (a new one when all
/// are busy); latency counted from the scheduled time, so a slow server cannot hide its queueing
/// (no coordinated omission).
pub(crate) async fn open_loop(addr: SocketAddr, rate: u64, seconds: u64) -> (Histogram, Duration) {
    let total = (rate * seconds) as usize;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let pool: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..8 {
        let c = Conn::open(addr).await.expect("connect");
        pool.lock().unwrap().push(c);
    }
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at).await;
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let taken = pool.lock().unwrap().pop();
            let mut conn = match taken {
                Some(c) => c,
                None => Conn::open(addr).await.expect("connect"),
            };
            let status = conn.get(&format!("/work/{i}")).await.expect("request");
            assert_eq!(status, 200, "the server answered {status}");
            let took = at.elapsed();
            pool.lock().unwrap().push(conn);
            took
        }));
    }
    let mut all = Histogram::new();
    for t in tasks {
        all.record(t.await.expect("client task"));
    }
    (all, start.elapsed())
}
