//! `cargo xtask bench --upload`: HTTP file upload (XEP-0363) of one large file through the
//! server's own upload service.
//!
//! One client logs in, asks `upload.localhost` for a slot (XEP-0363 §4), PUTs the file to the
//! slot's URL over HTTPS, GETs it back from the download URL and compares its SHA-256 with
//! what was sent. The file is generated as it is sent (a 256 KiB block, each chunk stamped with
//! its number so that a chunk written twice or out of order changes the hash) and hashed as it
//! is received: the bench holds neither copy. Reported: MiB/s of each transfer, the server's
//! CPU time during each, and its resident memory before, at most during (sampled) and its
//! lifetime peak (VmHWM): the server streams the body to disk, so its memory must not grow
//! with the file.

use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use minidom::Element;
use sha2::{Digest as _, Sha256};

use super::client::{login, Target, Transport};
use super::server::{
    clock_ticks_per_second, read_cpu_ticks, read_rss_kib, read_status_kib, register_users,
    utc_date, write_config_for, ConfigExtra, ServerProcess, TempDir,
};
use super::{runtime, user_name, Options, DOMAIN, SETTLE_TIME};

/// The file's size by default, in MiB.
pub(super) const DEFAULT_MIB: u64 = 100;
/// Bytes of one chunk of the generated file.
const CHUNK: usize = 256 * 1024;
/// One transfer must finish within this; a safety net only.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";

/// What one run measured.
struct Outcome {
    bytes: u64,
    put_secs: f64,
    get_secs: f64,
    put_cpu_secs: f64,
    get_cpu_secs: f64,
    rss_before_kib: u64,
    rss_max_put_kib: u64,
    rss_max_get_kib: u64,
    hwm_before_kib: u64,
    hwm_after_kib: u64,
}

pub(super) fn run(opts: &Options, binary: &Path, mib: u64) -> Result<()> {
    let bytes = mib * 1024 * 1024;
    let work = TempDir::create()?;
    let sections = format!(
        "[http]\nenabled = true\nlisten = []\ntls_listen = [\"127.0.0.1:0\"]\n\n\
         [upload]\nenabled = true\nmax_file_bytes = {bytes}\nquota_bytes_per_user = 0\n"
    );
    let config = write_config_for(
        &work.0,
        &ConfigExtra {
            sections: &sections,
            ..ConfigExtra::new(false)
        },
    )?;
    register_users(binary, &config, 1)?;
    let mut server = ServerProcess::start(binary, &config)?;
    let https = server.listener("https")?;
    let target = Target::tcp(server.direct_tls)?;
    let pid = server.pid();
    let runtime = runtime()?;
    let outcome = server.drive(
        &runtime,
        drive(opts, &target, https, pid, bytes),
        super::CLOSE_TIMEOUT,
    )?;
    print!("{}", table(&outcome));
    Ok(())
}

async fn drive(
    opts: &Options,
    target: &Target,
    https: std::net::SocketAddr,
    pid: u32,
    bytes: u64,
) -> Result<Outcome> {
    let block = block();
    eprintln!("bench: hashing the {} MiB to send", bytes >> 20);
    let expected = {
        let mut hash = Sha256::new();
        let mut file = Generated::new(block.clone(), bytes);
        while let Some(chunk) = file.next_chunk() {
            hash.update(&chunk);
        }
        hash.finalize()
    };

    let mut session = login(target, &user_name(0), opts.sasl).await?;
    session
        .send(&format!(
            "<iq type='get' id='slot' to='upload.{DOMAIN}'><request xmlns='{NS_UPLOAD}' \
             filename='bench.bin' size='{bytes}' content-type='application/octet-stream'/></iq>"
        ))
        .await?;
    let answer = super::client::wait_for(&mut session, |el| el.attr("id") == Some("slot")).await?;
    let (put, get) = slot_urls(&answer)?;
    super::client::close(session).await?;

    tokio::time::sleep(SETTLE_TIME).await;
    let rss_before_kib = read_rss_kib(pid)?;
    let hwm_before_kib = read_status_kib(pid, "VmHWM")?;
    let connector = Target::new(https, DOMAIN, Transport::Http)?;
    let clk_tck = clock_ticks_per_second() as f64;

    eprintln!("bench: PUT {} MiB", bytes >> 20);
    let cpu = read_cpu_ticks(pid)?;
    let watch = RssWatch::start(pid);
    let started = Instant::now();
    let body = Generated::new(block, bytes);
    let response = request(&connector, "PUT", &put, Some(body)).await?;
    let status = response.status();
    let text = response.into_body().collect().await?.to_bytes();
    let put_secs = started.elapsed().as_secs_f64();
    let rss_max_put_kib = watch.stop().await;
    let put_cpu_secs = read_cpu_ticks(pid)?.saturating_sub(cpu) as f64 / clk_tck;
    if status != hyper::StatusCode::CREATED {
        bail!("PUT answered {status}: {}", String::from_utf8_lossy(&text));
    }

    eprintln!("bench: GET {} MiB", bytes >> 20);
    let cpu = read_cpu_ticks(pid)?;
    let watch = RssWatch::start(pid);
    let started = Instant::now();
    let response = request(&connector, "GET", &get, None).await?;
    if response.status() != hyper::StatusCode::OK {
        bail!("GET answered {}", response.status());
    }
    let mut body = response.into_body();
    let mut hash = Sha256::new();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.context("reading the download")?.into_data() {
            got += data.len() as u64;
            hash.update(&data);
        }
    }
    let get_secs = started.elapsed().as_secs_f64();
    let rss_max_get_kib = watch.stop().await;
    let get_cpu_secs = read_cpu_ticks(pid)?.saturating_sub(cpu) as f64 / clk_tck;
    if got != bytes || hash.finalize() != expected {
        bail!("the download differs from the upload ({got} of {bytes} bytes came back)");
    }
    Ok(Outcome {
        bytes,
        put_secs,
        get_secs,
        put_cpu_secs,
        get_cpu_secs,
        rss_before_kib,
        rss_max_put_kib,
        rss_max_get_kib,
        hwm_before_kib,
        hwm_after_kib: read_status_kib(pid, "VmHWM")?,
    })
}

/// The PUT and GET URLs of a slot (XEP-0363 §4), or the service's error.
fn slot_urls(answer: &Element) -> Result<(String, String)> {
    let slot = answer
        .get_child("slot", NS_UPLOAD)
        .ok_or_else(|| anyhow!("no slot: {}", String::from(answer)))?;
    let url = |name: &str| {
        slot.get_child(name, NS_UPLOAD)
            .and_then(|e| e.attr("url"))
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the slot has no <{name}/> URL"))
    };
    if slot
        .get_child("put", NS_UPLOAD)
        .is_some_and(|p| p.children().next().is_some())
    {
        bail!("the slot asks for PUT headers, which the bench does not send");
    }
    Ok((url("put")?, url("get")?))
}

/// One HTTP/1.1 request on a connection of its own to the HTTPS listener (whatever host the
/// URL names: the bench's server is on 127.0.0.1).
async fn request(
    target: &Target,
    method: &str,
    url: &str,
    body: Option<Generated>,
) -> Result<hyper::Response<hyper::body::Incoming>> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("URL {url}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let host = uri.authority().map_or(DOMAIN, |a| a.as_str()).to_owned();
    let tls = target.connect_tls().await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(conn);
    let builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    let request = match body {
        Some(body) => builder
            .header(hyper::header::CONTENT_LENGTH, body.left)
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .body(Either::Body(body))?,
        None => builder.body(Either::Empty)?,
    };
    tokio::time::timeout(TRANSFER_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| anyhow!("no answer within {TRANSFER_TIMEOUT:?}"))?
        .with_context(|| format!("{method} {}", uri.path()))
}

/// 256 KiB of xorshift output: the pattern of every chunk.
fn block() -> Bytes {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < CHUNK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(out)
}

/// The generated file, chunk by chunk: the block with the chunk's number in its first bytes.
struct Generated {
    block: Bytes,
    left: u64,
    index: u64,
}

impl Generated {
    fn new(block: Bytes, len: u64) -> Self {
        Generated {
            block,
            left: len,
            index: 0,
        }
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let len = usize::try_from(self.left).map_or(CHUNK, |l| l.min(CHUNK));
        let mut chunk = self.block[..len].to_vec();
        let stamp = self.index.to_le_bytes();
        let n = stamp.len().min(len);
        chunk[..n].copy_from_slice(&stamp[..n]);
        self.index += 1;
        self.left -= len as u64;
        Some(Bytes::from(chunk))
    }
}

/// A request body: the generated file, or nothing.
enum Either {
    Body(Generated),
    Empty,
}

impl Body for Either {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Either::Body(file) => Poll::Ready(file.next_chunk().map(|c| Ok(Frame::data(c)))),
            Either::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Either::Body(file) => file.left == 0,
            Either::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Either::Body(file) => SizeHint::with_exact(file.left),
            Either::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The server's resident memory, sampled every 20 ms until stopped: its highest value.
struct RssWatch {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Ok(kib) = read_rss_kib(pid) {
                    m.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssWatch { stop, max, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.max.load(Ordering::Relaxed)
    }
}

fn table(o: &Outcome) -> String {
    let mib = o.bytes as f64 / (1024.0 * 1024.0);
    let kib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    let rows = [
        ("date", utc_date()),
        (
            "file",
            format!("{mib:.0} MiB, SHA-256 checked after the GET"),
        ),
        (
            "PUT",
            format!(
                "{:.2} s, {:.1} MiB/s",
                o.put_secs,
                mib / o.put_secs.max(1e-9)
            ),
        ),
        (
            "GET",
            format!(
                "{:.2} s, {:.1} MiB/s",
                o.get_secs,
                mib / o.get_secs.max(1e-9)
            ),
        ),
        ("server CPU, PUT", format!("{:.2} s", o.put_cpu_secs)),
        ("server CPU, GET", format!("{:.2} s", o.get_cpu_secs)),
        ("server RSS before", kib(o.rss_before_kib)),
        ("server RSS, highest during PUT", kib(o.rss_max_put_kib)),
        ("server RSS, highest during GET", kib(o.rss_max_get_kib)),
        (
            "server peak RSS (VmHWM) before / after",
            format!("{} / {}", kib(o.hwm_before_kib), kib(o.hwm_after_kib)),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_file_has_its_length_and_numbered_chunks() {
        let len = 2 * CHUNK as u64 + 10;
        let mut file = Generated::new(block(), len);
        let chunks: Vec<Bytes> = std::iter::from_fn(|| file.next_chunk()).collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks.iter().map(|c| c.len() as u64).sum::<u64>(), len);
        assert_eq!(chunks[1][..8], 1u64.to_le_bytes());
        assert_ne!(chunks[0], chunks[1]);
        assert_eq!(chunks[0][8..], chunks[1][8..]);
    }

    #[test]
    fn slot_urls_read() {
        let answer: Element = "<iq xmlns='jabber:client' type='result' id='slot'>\
            <slot xmlns='urn:xmpp:http:upload:0'><put url='https://h/upload/a/b?sig=1'/>\
            <get url='https://h/upload/a/b'/></slot></iq>"
            .parse()
            .unwrap();
        assert_eq!(
            slot_urls(&answer).unwrap(),
            (
                "https://h/upload/a/b?sig=1".to_owned(),
                "https://h/upload/a/b".to_owned()
            )
        );
        let refused: Element = "<iq xmlns='jabber:client' type='error' id='slot'/>"
            .parse()
            .unwrap();
        assert!(slot_urls(&refused).is_err());
    }
}
