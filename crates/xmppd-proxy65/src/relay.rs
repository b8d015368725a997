//! The proxy's listener and its pairings (XEP-0065 §6.3.2–§6.3.4). Both parties connect with
//! the same address (the hash of sid, initiator and target); the pair waits until the
//! initiator activates it, then the proxy relays bytes both ways. Before activation nothing
//! is read from either connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use xmppd_core::pending::PendingLimit;

use crate::pacer::Pacer;
use crate::socks5::{self, Reply};

/// Bytes read and written at once; also the bucket's burst, so that a limit holds within one
/// chunk.
const CHUNK: usize = 16 * 1024;

/// The relay's limits.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Bytes a second one transfer may relay (both ways together); 0: no limit.
    pub transfer_bytes_per_sec: u64,
    /// Bytes a second all transfers together may relay; 0: no limit.
    pub total_bytes_per_sec: u64,
    /// Transfers (activated, or waiting for their pair or activation) at once.
    pub max_transfers: usize,
    /// From the first connection of a pair to the activation.
    pub pairing_timeout: Duration,
    /// A transfer with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections from one IP address still in their SOCKS5 handshake; more are closed at
    /// once, so one address cannot hold descriptors until the pairing timeout.
    pub max_pending_per_ip: usize,
}

/// Why an activation failed (XEP-0065 §6.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivateError {
    /// No connection with this address: `<item-not-found/>`.
    Unknown,
    /// Only one party connected so far: `<not-allowed/>`.
    Unpaired,
}

/// A pair waiting for its activation.
struct Pending {
    id: u64,
    first: TcpStream,
    second: Option<TcpStream>,
}

#[derive(Default)]
struct Table {
    pending: HashMap<String, Pending>,
    active: usize,
    next_id: u64,
}

/// The pairings, and the pacing every transfer shares.
pub struct Relay {
    settings: RelaySettings,
    total: Pacer,
    table: Mutex<Table>,
    /// Connections in their handshake, per peer address.
    handshakes: Arc<PendingLimit>,
}

impl Relay {
    pub fn new(settings: RelaySettings) -> Arc<Self> {
        Arc::new(Relay {
            total: Pacer::new(settings.total_bytes_per_sec, CHUNK as u64),
            handshakes: PendingLimit::new(settings.max_pending_per_ip),
            settings,
            table: Mutex::default(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Transfers activated and running.
    pub fn active(&self) -> usize {
        self.table().active
    }

    /// Accepts connections until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(Arc::clone(&self).connection(stream, peer));
                }
                Err(e) => {
                    // Out of descriptors, most likely: let some close.
                    tracing::warn!(error = %e, "proxy65: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// One connection: the handshake, then its place in a pair. The first of a pair stays
    /// here as the pair's timer: a pair not activated in time is closed.
    async fn connection(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        let Some(handshake) = self.handshakes.try_acquire(peer.ip()) else {
            return tracing::debug!(%peer, "proxy65: too many handshakes from one address");
        };
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + self.settings.pairing_timeout;
        let addr = match tokio::time::timeout_at(deadline, socks5::read_request(&mut stream)).await
        {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "proxy65: handshake failed"),
            Err(_) => return tracing::debug!(%peer, "proxy65: handshake timed out"),
        };
        drop(handshake);
        if let Err(code) = self.admissible(&addr) {
            socks5::refuse(&mut stream, &addr, code).await;
            return;
        }
        let id = {
            let mut t = self.table();
            if admissible(&t, &addr, self.settings.max_transfers).is_err() {
                // Taken or full meanwhile.
                return;
            }
            // Answered under the lock, so that an activation sent after the answer finds the
            // connection placed. A fresh socket's send buffer takes these few bytes at once;
            // a connection that cannot is dropped.
            let answer = socks5::success(&addr);
            if !matches!(stream.try_write(&answer), Ok(n) if n == answer.len()) {
                return;
            }
            match t.pending.get_mut(&addr) {
                Some(p) => {
                    p.second = Some(stream);
                    return;
                }
                None => {
                    t.next_id += 1;
                    let id = t.next_id;
                    let pending = Pending {
                        id,
                        first: stream,
                        second: None,
                    };
                    t.pending.insert(addr.clone(), pending);
                    id
                }
            }
        };
        tokio::time::sleep_until(deadline).await;
        let mut t = self.table();
        if t.pending.get(&addr).is_some_and(|p| p.id == id) {
            // Dropped here: both connections close.
            t.pending.remove(&addr);
            tracing::debug!("proxy65: a bytestream was not activated in time");
        }
    }

    fn admissible(&self, addr: &str) -> Result<(), Reply> {
        admissible(&self.table(), addr, self.settings.max_transfers)
    }

    /// Activates the pair connected with `addr`: its bytes are relayed from now on.
    pub fn activate(self: &Arc<Self>, addr: &str) -> Result<(), ActivateError> {
        let (a, b) = {
            let mut t = self.table();
            match t.pending.get(addr) {
                None => return Err(ActivateError::Unknown),
                Some(p) if p.second.is_none() => return Err(ActivateError::Unpaired),
                Some(_) => {}
            }
            let p = t.pending.remove(addr).expect("present");
            t.active += 1;
            (p.first, p.second.expect("paired"))
        };
        let relay = Arc::clone(self);
        tokio::spawn(async move {
            relay.transfer(a, b).await;
            relay.table().active -= 1;
        });
        Ok(())
    }

    /// Relays both ways until both sides ended, or nothing moved for the idle timeout.
    async fn transfer(&self, a: TcpStream, b: TcpStream) {
        let pacer = Pacer::new(self.settings.transfer_bytes_per_sec, CHUNK as u64);
        let start = Instant::now();
        let last = AtomicU64::new(0);
        let (ar, aw) = a.into_split();
        let (br, bw) = b.into_split();
        let way = |r, w| Way {
            relay: self,
            pacer: &pacer,
            start,
            last: &last,
            read: r,
            write: w,
        };
        tokio::join!(way(ar, bw).pump(), way(br, aw).pump());
    }
}

/// Whether a connection with `addr` may take a place: the second of a pair may; a third may
/// not (the address is taken); a new pair only within the limit on transfers.
fn admissible(t: &Table, addr: &str, max_transfers: usize) -> Result<(), Reply> {
    match t.pending.get(addr) {
        Some(p) if p.second.is_some() => Err(Reply::NotAllowed),
        Some(_) => Ok(()),
        None if t.pending.len() + t.active >= max_transfers => Err(Reply::GeneralFailure),
        None => Ok(()),
    }
}

/// One direction of a transfer.
struct Way<'a> {
    relay: &'a Relay,
    pacer: &'a Pacer,
    start: Instant,
    /// Milliseconds from `start` to the last byte relayed either way.
    last: &'a AtomicU64,
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
}

impl Way<'_> {
    async fn pump(mut self) {
        let idle = self.relay.settings.idle_timeout;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match tokio::time::timeout(idle, self.read.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => n,
                // Quiet this way; the transfer is idle only if the other way is too.
                Err(_) if self.idle_for() < idle => continue,
                Err(_) => break,
            };
            self.pacer.pace(n).await;
            self.relay.total.pace(n).await;
            match tokio::time::timeout(idle, self.write.write_all(&buf[..n])).await {
                Ok(Ok(())) => self.touch(),
                _ => break,
            }
        }
        // The other side sees the end of this way; the other way goes on until it ends.
        let _ = self.write.shutdown().await;
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RelaySettings {
        RelaySettings {
            transfer_bytes_per_sec: 0,
            total_bytes_per_sec: 0,
            max_transfers: 4,
            pairing_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_pending_per_ip: 8,
        }
    }

    async fn start(settings: RelaySettings) -> (Arc<Relay>, SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = Relay::new(settings);
        let (tx, rx) = watch::channel(false);
        tokio::spawn(Arc::clone(&relay).serve(listener, rx));
        (relay, addr, tx)
    }

    /// A client's handshake; returns the stream and the reply code.
    async fn connect(at: SocketAddr, hash: &str) -> (TcpStream, u8) {
        let mut s = TcpStream::connect(at).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut method = [0u8; 2];
        s.read_exact(&mut method).await.unwrap();
        assert_eq!(method, [5, 0]);
        let mut req = vec![5, 1, 0, 3, hash.len() as u8];
        req.extend(hash.as_bytes());
        req.extend([0, 0]);
        s.write_all(&req).await.unwrap();
        let mut reply = vec![0u8; 7 + hash.len()];
        s.read_exact(&mut reply).await.unwrap();
        (s, reply[1])
    }

    fn hash(sid: &str) -> String {
        socks5::dst_addr(sid, "a@example.org/1", "b@example.org/2")
    }

    #[tokio::test]
    async fn an_activated_pair_relays_both_ways() {
        let (relay, at, _stop) = start(settings()).await;
        let h = hash("one");
        assert_eq!(relay.activate(&h), Err(ActivateError::Unknown));
        // Each connection is placed before its success reply: activation right after works.
        let (mut target, code) = connect(at, &h).await;
        assert_eq!(code, 0);
        assert_eq!(relay.activate(&h), Err(ActivateError::Unpaired));
        let (mut initiator, code) = connect(at, &h).await;
        assert_eq!(code, 0);
        // A third connection with the same address is refused.
        let (_third, code) = connect(at, &h).await;
        assert_eq!(code, Reply::NotAllowed as u8);
        relay.activate(&h).unwrap();
        assert_eq!(relay.activate(&h), Err(ActivateError::Unknown));
        initiator.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        target.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        target.write_all(b"pong").await.unwrap();
        initiator.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        // The end of one side reaches the other.
        drop(initiator);
        assert_eq!(target.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn transfers_beyond_the_limit_are_refused() {
        let (_relay, at, _stop) = start(RelaySettings {
            max_transfers: 1,
            ..settings()
        })
        .await;
        let (_first, code) = connect(at, &hash("one")).await;
        assert_eq!(code, 0);
        let (_other, code) = connect(at, &hash("two")).await;
        assert_eq!(code, Reply::GeneralFailure as u8);
        // The second of the pair in place still gets in.
        let (_second, code) = connect(at, &hash("one")).await;
        assert_eq!(code, 0);
    }

    #[tokio::test]
    async fn one_address_holds_few_handshakes() {
        let (relay, at, _stop) = start(RelaySettings {
            max_pending_per_ip: 2,
            ..settings()
        })
        .await;
        // Two connections that never speak hold both of the address's places (the test's
        // runtime has one thread: connections are counted in the order they were accepted)...
        let silent = [
            TcpStream::connect(at).await.unwrap(),
            TcpStream::connect(at).await.unwrap(),
        ];
        // ...so a third is closed without an answer.
        let mut third = TcpStream::connect(at).await.unwrap();
        let _ = third.write_all(&[5, 1, 0]).await;
        let mut buf = [0u8; 2];
        let read = tokio::time::timeout(Duration::from_secs(30), third.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a third handshake from one address was served: {read:?}"
        );
        let here = "127.0.0.1".parse().unwrap();
        assert_eq!(relay.handshakes.count(here), 2);
        // Once they close, the address gets its places back.
        drop(silent);
        let deadline = Instant::now() + Duration::from_secs(30);
        while relay.handshakes.count(here) != 0 {
            assert!(Instant::now() < deadline, "closed handshakes still counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(connect(at, &hash("after")).await.1, 0);
    }

    #[tokio::test]
    async fn a_pair_not_activated_in_time_is_closed() {
        let (relay, at, _stop) = start(RelaySettings {
            pairing_timeout: Duration::from_millis(300),
            ..settings()
        })
        .await;
        let h = hash("late");
        let (mut target, _) = connect(at, &h).await;
        let (_initiator, _) = connect(at, &h).await;
        let mut buf = [0u8; 1];
        let eof = tokio::time::timeout(Duration::from_secs(30), target.read(&mut buf)).await;
        assert_eq!(eof.expect("closed within the safety net").unwrap(), 0);
        assert_eq!(relay.activate(&h), Err(ActivateError::Unknown));
    }

    #[tokio::test]
    async fn a_transfer_is_paced_to_its_rate() {
        let rate = 512 * 1024;
        let (relay, at, _stop) = start(RelaySettings {
            transfer_bytes_per_sec: rate,
            ..settings()
        })
        .await;
        let h = hash("paced");
        let (mut target, _) = connect(at, &h).await;
        let (mut initiator, _) = connect(at, &h).await;
        relay.activate(&h).unwrap();
        let size = 256 * 1024;
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            initiator.write_all(&vec![7u8; size]).await.unwrap();
            initiator
        });
        let mut got = vec![0u8; size];
        target.read_exact(&mut got).await.unwrap();
        let least = Duration::from_secs_f64((size - CHUNK) as f64 / rate as f64);
        assert!(
            started.elapsed() >= least,
            "{:?} < {least:?}",
            started.elapsed()
        );
        assert!(got.iter().all(|b| *b == 7));
        drop(writer.await.unwrap());
    }
}
