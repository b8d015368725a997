//! The HTTP side, under [`crate::PATH`]: `/upload/ID/NAME`.
//!
//! - PUT (XEP-0363 §6) with the slot's signed URL: checked against the slot (signature and
//!   expiry, `Content-Length` equal to its size, its content type when it named one, a slot
//!   that has not been used), streamed to a temporary file in bounded parts, synced and
//!   renamed into place: a file is served whole or not at all. `201` when stored.
//! - GET and HEAD: the stored file, streamed from disk, with single byte ranges (RFC 9110
//!   §14: `206`, `416`). A browser must not run what it downloads: `nosniff`, a
//!   `Content-Security-Policy` that allows nothing, and `attachment` for every type that is
//!   not plainly inert (images, audio, video, plain text).
//! - CORS (configured origins) on every answer, and OPTIONS preflights, for web clients.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWriteExt, ReadBuf};
use xmppd_http::{full, text, Peer, RequestBody, ResponseBody, Service};

use crate::name::{check_content_type, decode_segment, encode_segment, is_id, media_type};
use crate::sign::{Refused, Signed};
use crate::store::{Slot, State};
use crate::{Files, Uploads, PATH};

/// What a download may do in a browser: nothing (no scripts, no frames, no requests).
const CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";
/// Bytes read from disk per frame of a download.
const CHUNK: usize = 64 * 1024;
/// Bytes buffered before a write to disk during an upload.
const WRITE_BUFFER: usize = 256 * 1024;

/// The service routed at [`crate::PATH`] (`Router::route_streaming`: it bounds bodies itself).
pub struct UploadHttp {
    uploads: Arc<Uploads>,
}

impl UploadHttp {
    pub fn new(uploads: Arc<Uploads>) -> UploadHttp {
        UploadHttp { uploads }
    }

    /// Adds the CORS headers for a request from `origin`, when it is allowed.
    fn cors(&self, headers: &mut HeaderMap, origin: Option<&str>, preflight: bool) {
        let Some(origin) = origin else { return };
        let origins = &self.uploads.settings.cors_origins;
        let allow = if origins.iter().any(|o| o == "*") {
            "*".to_owned()
        } else if origins.iter().any(|o| o == origin) {
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            origin.to_owned()
        } else {
            return;
        };
        let Ok(allow) = HeaderValue::from_str(&allow) else {
            return;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        let exposed = HeaderValue::from_static("Content-Length, Content-Range, Accept-Ranges");
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed);
        if preflight {
            let methods = HeaderValue::from_static("GET, HEAD, PUT, OPTIONS");
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
            let allowed = HeaderValue::from_static("Content-Type");
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
            let day = HeaderValue::from_static("86400");
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, day);
        }
    }
}

#[async_trait::async_trait]
impl Service for UploadHttp {
    async fn call(&self, req: Request<RequestBody>, _peer: &Peer) -> Response<ResponseBody> {
        let origin = (req.headers().get(header::ORIGIN))
            .and_then(|v| v.to_str().ok())
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
        let preflight = req.method() == Method::OPTIONS;
        let mut resp = match self.uploads.files() {
            Some(files) => answer(&self.uploads, files, req).await,
            None => text(StatusCode::NOT_FOUND, "Not found"),
        };
        self.cors(resp.headers_mut(), origin.as_deref(), preflight);
        resp
    }
}

/// The slot id and the decoded file name of an upload path.
fn parse_path(path: &str) -> Option<(&str, String)> {
    let (id, name) = path.strip_prefix(PATH)?.split_once('/')?;
    let name = decode_segment(name)?;
    (is_id(id) && !name.is_empty() && !name.contains('/')).then_some((id, name))
}

async fn answer(
    uploads: &Uploads,
    files: &Files,
    req: Request<RequestBody>,
) -> Response<ResponseBody> {
    let Some((id, name)) = parse_path(req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "Not found");
    };
    let id = id.to_owned();
    let method = req.method().clone();
    if method == Method::OPTIONS {
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        return resp;
    }
    if !matches!(method, Method::GET | Method::HEAD | Method::PUT) {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "Only GET, HEAD and PUT");
        let allow = HeaderValue::from_static("GET, HEAD, PUT, OPTIONS");
        resp.headers_mut().insert(header::ALLOW, allow);
        return resp;
    }
    let slot = match files.store.get(&id).await {
        Ok(Some(slot)) if slot.name == name => slot,
        Ok(_) => return text(StatusCode::NOT_FOUND, "Not found"),
        Err(e) => {
            tracing::warn!(error = %e, "reading an upload slot");
            return text(StatusCode::SERVICE_UNAVAILABLE, "Try again later");
        }
    };
    if method == Method::PUT {
        put(uploads, files, slot, req).await
    } else {
        get(files, slot, &req).await
    }
}

/// One query parameter's value (ours are plain: digits and hex).
fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    (query.split('&')).find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn header_str(req: &Request<RequestBody>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn put(
    uploads: &Uploads,
    files: &Files,
    slot: Slot,
    req: Request<RequestBody>,
) -> Response<ResponseBody> {
    let query = req.uri().query().unwrap_or("");
    let expires = param(query, "expires").and_then(|e| e.parse::<u64>().ok());
    let (Some(expires), Some(sig)) = (expires, param(query, "sig")) else {
        return text(StatusCode::FORBIDDEN, "Not a signed upload URL");
    };
    let signed = Signed {
        id: &slot.id,
        size: slot.size,
        content_type: slot.content_type.as_deref(),
        expires,
    };
    let now = (xmppd_core::stanza::now_ms() / 1000) as u64;
    match signed.verify(&files.key, sig, now) {
        Ok(()) => {}
        Err(Refused::BadSignature) => {
            return text(StatusCode::FORBIDDEN, "Invalid signature");
        }
        Err(Refused::Expired) => {
            return text(StatusCode::FORBIDDEN, "This upload URL has expired");
        }
    }
    if slot.state != State::Issued {
        return text(StatusCode::CONFLICT, "This slot was already used");
    }
    let length = header_str(&req, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    match length {
        None => return text(StatusCode::LENGTH_REQUIRED, "Content-Length is required"),
        Some(n) if n != slot.size => {
            let why = format!(
                "Content-Length must be the slot's size, {} bytes",
                slot.size
            );
            return text(StatusCode::BAD_REQUEST, &why);
        }
        Some(_) => {}
    }
    let given = header_str(&req, header::CONTENT_TYPE).map(str::trim);
    match (&slot.content_type, given) {
        (Some(want), got) if got.map(media_type) != Some(media_type(want)) => {
            let why = format!("Content-Type must be the slot's, {want}");
            return text(StatusCode::BAD_REQUEST, &why);
        }
        (None, Some(got)) if !check_content_type(got) => {
            return text(StatusCode::BAD_REQUEST, "Invalid Content-Type");
        }
        _ => {}
    }
    let content_type = given.map(str::to_owned);
    match files.store.claim(&slot.id, &files.holder).await {
        Ok(true) => {}
        Ok(false) => return text(StatusCode::CONFLICT, "This slot was already used"),
        Err(e) => {
            tracing::warn!(error = %e, "claiming an upload slot");
            return text(StatusCode::SERVICE_UNAVAILABLE, "Try again later");
        }
    }
    let temp = files.temp_path(&slot.id);
    let idle = uploads.settings.idle_timeout;
    let written = receive(&temp, req.into_body(), slot.size, idle).await;
    let stored = match written {
        Ok(()) => tokio::fs::rename(&temp, files.path(&slot.id))
            .await
            .map_err(|e| Failed::Disk(e.to_string())),
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        let _ = tokio::fs::remove_file(&temp).await;
        if let Err(e) = files.store.release(&slot.id).await {
            tracing::warn!(error = %e, "releasing an upload slot");
        }
        return e.response();
    }
    let now_ms = xmppd_core::stanza::now_ms();
    match files.store.finish(&slot.id, now_ms, content_type).await {
        Ok(true) => {
            xmppd_metrics::upload_stored(slot.size);
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::CREATED;
            resp
        }
        outcome => {
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "recording an upload");
            }
            let _ = tokio::fs::remove_file(files.path(&slot.id)).await;
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "The upload could not be recorded",
            )
        }
    }
}

/// Why an upload's body was not stored.
#[derive(Debug)]
enum Failed {
    /// No part arrived within the idle timeout.
    Idle,
    /// The connection broke, or the body was not the announced length.
    Body(String),
    Disk(String),
}

impl Failed {
    fn response(self) -> Response<ResponseBody> {
        match self {
            Failed::Idle => text(StatusCode::REQUEST_TIMEOUT, "The upload stalled"),
            Failed::Body(why) => text(StatusCode::BAD_REQUEST, &why),
            Failed::Disk(why) => {
                tracing::warn!(error = why, "writing an upload");
                text(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "The file could not be stored",
                )
            }
        }
    }
}

/// Streams `body` into a new file at `temp`, at most `size` bytes, waiting at most `idle` for
/// each part, and syncs it.
async fn receive(
    temp: &std::path::Path,
    mut body: RequestBody,
    size: u64,
    idle: std::time::Duration,
) -> Result<(), Failed> {
    let disk = |e: std::io::Error| Failed::Disk(e.to_string());
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let file = options.open(temp).await.map_err(disk)?;
    let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut got = 0u64;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(Failed::Idle),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Failed::Body(format!("The upload broke off: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        got += data.len() as u64;
        if got > size {
            return Err(Failed::Body("More bytes than the slot's size".into()));
        }
        out.write_all(&data).await.map_err(disk)?;
    }
    if got != size {
        return Err(Failed::Body(format!("Got {got} of {size} bytes")));
    }
    out.flush().await.map_err(disk)?;
    out.into_inner().sync_all().await.map_err(disk)
}

/// Whether a browser shows this type without running anything: everything else is a download.
fn inert(content_type: &str) -> bool {
    let t = media_type(content_type);
    let images = [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
    ];
    images.contains(&t.as_str())
        || t == "text/plain"
        || t.starts_with("audio/")
        || t.starts_with("video/")
}

/// A `Range` header against a file of `len` bytes (RFC 9110 §14.1.2): `None` to send it
/// whole (no range, another unit, several ranges, bad syntax), `Some(Err)` when no byte of
/// it exists (`416`), else the first and last byte.
fn byte_range(header: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header.trim();
    let (unit, set) = spec.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return None;
    }
    let (first, last) = set.trim().split_once('-')?;
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        // The last N bytes.
        (true, false) => {
            let n = num(last)?;
            if n == 0 || len == 0 {
                return Some(Err(()));
            }
            (len - n.min(len), len - 1)
        }
        (false, true) => (num(first)?, len.saturating_sub(1)),
        (false, false) => {
            let (a, b) = (num(first)?, num(last)?);
            if a > b {
                return None;
            }
            (a, b.min(len.saturating_sub(1)))
        }
        (true, true) => return None,
    };
    if range.0 >= len {
        return Some(Err(()));
    }
    Some(Ok(range))
}

async fn get(files: &Files, slot: Slot, req: &Request<RequestBody>) -> Response<ResponseBody> {
    if slot.state != State::Stored {
        return text(StatusCode::NOT_FOUND, "Not found");
    }
    let mut file = match tokio::fs::File::open(files.path(&slot.id)).await {
        Ok(file) => file,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, "opening an uploaded file");
            }
            return text(StatusCode::NOT_FOUND, "Not found");
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(_) => return text(StatusCode::NOT_FOUND, "Not found"),
    };
    let etag = format!("\"{}\"", slot.id);
    // A range of another version of the file is no use: only this one's (§13.1.5).
    let if_range = header_str(req, header::IF_RANGE);
    let range = header_str(req, header::RANGE)
        .filter(|_| if_range.is_none_or(|v| v.trim() == etag))
        .and_then(|r| byte_range(r, len));
    let content_type = (slot.content_type.as_deref()).unwrap_or("application/octet-stream");
    let mut resp = Response::new(full(Bytes::new()));
    let headers = resp.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    headers.insert(header::CONTENT_TYPE, value(content_type));
    headers.insert(header::ETAG, value(&etag));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let nosniff = HeaderValue::from_static("nosniff");
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, nosniff);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    let kind = if inert(content_type) {
        "inline"
    } else {
        "attachment"
    };
    // RFC 6266 with RFC 8187's encoding: any name, nothing for the header to misread.
    let disposition = format!("{kind}; filename*=UTF-8''{}", encode_segment(&slot.name));
    headers.insert(header::CONTENT_DISPOSITION, value(&disposition));
    let (start, end) = match range {
        None => (0, len.saturating_sub(1)),
        Some(Err(())) => {
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let unsatisfied = value(&format!("bytes */{len}"));
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, unsatisfied);
            return resp;
        }
        Some(Ok((start, end))) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let range = value(&format!("bytes {start}-{end}/{len}"));
            resp.headers_mut().insert(header::CONTENT_RANGE, range);
            (start, end)
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    let length = value(&count.to_string());
    resp.headers_mut().insert(header::CONTENT_LENGTH, length);
    if req.method() == Method::HEAD || count == 0 {
        return resp;
    }
    if start > 0 {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
            tracing::warn!(error = %e, "seeking in an uploaded file");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "Cannot read the file");
        }
    }
    let body = FileBody {
        file,
        remaining: count,
        buf: vec![0; CHUNK].into_boxed_slice(),
    };
    *resp.body_mut() = body.boxed();
    resp
}

/// A file's bytes as a response body, one bounded frame at a time.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Box<[u8]>,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = (this.buf.len() as u64).min(this.remaining) as usize;
        let mut read = ReadBuf::new(&mut this.buf[..want]);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                Poll::Ready(Some(Err("the file ended early".into())))
            }
            Poll::Ready(Ok(())) => {
                let data = Bytes::copy_from_slice(read.filled());
                this.remaining -= data.len() as u64;
                xmppd_metrics::upload_served(data.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |h: &str| byte_range(h, 100);
        assert_eq!(r("bytes=0-9"), Some(Ok((0, 9))));
        assert_eq!(r("bytes=90-"), Some(Ok((90, 99))));
        assert_eq!(r("bytes=-10"), Some(Ok((90, 99))));
        assert_eq!(r("bytes=-1000"), Some(Ok((0, 99))));
        assert_eq!(r("bytes=95-1000"), Some(Ok((95, 99))));
        assert_eq!(r("Bytes = 5-5"), Some(Ok((5, 5))));
        assert_eq!(r("bytes=100-"), Some(Err(())));
        assert_eq!(r("bytes=100-200"), Some(Err(())));
        assert_eq!(r("bytes=-0"), Some(Err(())));
        // Sent whole: several ranges, another unit, nonsense.
        for whole in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=9-1",
            "bytes=-",
            "bytes=x-1",
            "0-1",
        ] {
            assert_eq!(r(whole), None, "{whole}");
        }
    }

    #[test]
    fn only_inert_types_are_shown_inline() {
        for t in [
            "image/png",
            "IMAGE/JPEG",
            "video/mp4",
            "audio/ogg",
            "text/plain; charset=utf-8",
        ] {
            assert!(inert(t), "{t}");
        }
        for t in [
            "text/html",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/pdf",
            "application/javascript",
            "application/octet-stream",
        ] {
            assert!(!inert(t), "{t}");
        }
    }

    #[test]
    fn paths_name_a_slot_id_and_one_segment() {
        let id = "00112233445566778899aabbccddeeff";
        let path = format!("/upload/{id}/tr%C3%A8s%20cool.jpg");
        assert_eq!(parse_path(&path), Some((id, "très cool.jpg".to_string())));
        for bad in [
            format!("/upload/{id}/"),
            format!("/upload/{id}"),
            format!("/upload/{id}/a/b"),
            format!("/upload/{id}/a%2Fb"),
            "/upload/../../etc/passwd".to_string(),
            format!("/upload/{}/a", &id[..30]),
        ] {
            assert_eq!(parse_path(&bad), None, "{bad}");
        }
    }

    #[test]
    fn query_parameters_are_found_by_exact_name() {
        let q = "expires=12&sig=ab&xsig=cd";
        assert_eq!(
            (param(q, "expires"), param(q, "sig")),
            (Some("12"), Some("ab"))
        );
        assert_eq!(param(q, "exp"), None);
    }
}
