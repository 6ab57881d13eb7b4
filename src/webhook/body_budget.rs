//! Memory held by request bodies, bounded three ways: per connection, per client address, and for the
//! whole process. Without it, each connection may hold a 3 MiB body for the whole request deadline:
//! 200 stalled uploads (or one HTTP/2 connection with 100 streams) took the server past its 128 MiB
//! container limit, and with `failurePolicy: Fail` an OOM-killed webhook refuses every GPU pod.
//!
//! Bytes are reserved as they arrive (or all at once when `Content-Length` says how many will come), so
//! a client is refused before its bytes are buffered, not after. A refusal is `503` with `Retry-After`:
//! the API server retries or fails the one pod, the process stays up. The per-address share keeps one
//! client (a pod hammering the Service) from taking the room the API server's own requests need.
//!
//! The process pool keeps a third of itself for the first [`SMALL_BODY`] bytes of each body: large
//! uploads, however many addresses send them, cannot take the room ordinary reviews (a pod is a few
//! KiB) need: 16 MiB of the default 48 MiB is 256 ordinary reviews in flight.
//!
//! Connections are counted per client address too: each costs TLS and HTTP state whether or not it
//! sends a body, so one address may hold at most [`super::server::Limits::max_connections_per_peer`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The head of every body that may use the reserve: a review of an ordinary pod is well below it.
pub const SMALL_BODY: usize = 64 * 1024;

/// A number of bytes that may be held at once.
#[derive(Debug)]
struct Pool {
    used: AtomicUsize,
    limit: usize,
}

impl Pool {
    fn new(limit: usize) -> Arc<Pool> {
        Arc::new(Pool {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    fn try_take(&self, n: usize) -> bool {
        self.try_take_below(n, self.limit)
    }

    /// Takes `n` only if the pool then holds at most `ceiling` (below its limit: room kept for others).
    fn try_take_below(&self, n: usize, ceiling: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n)
                    .filter(|total| *total <= ceiling.min(self.limit))
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Which bound refused a reservation (said in the `503` and counted in metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    Connection,
    Peer,
    Process,
}

impl Exhausted {
    pub fn as_str(self) -> &'static str {
        match self {
            Exhausted::Connection => "connection",
            Exhausted::Peer => "client address",
            Exhausted::Process => "server",
        }
    }
}

/// The limits, in bytes and connections.
#[derive(Debug, Clone, Copy)]
pub struct BudgetLimits {
    pub process_bytes: usize,
    pub peer_bytes: usize,
    pub connection_bytes: usize,
    pub peer_connections: usize,
}

/// One client address: its connections and the body bytes they hold.
#[derive(Debug)]
struct Peer {
    connections: usize,
    bytes: Arc<Pool>,
}

/// The process-wide registry: created once per server.
#[derive(Debug)]
pub struct BodyBudget {
    limits: BudgetLimits,
    process: Arc<Pool>,
    peers: Mutex<HashMap<IpAddr, Peer>>,
}

impl BodyBudget {
    pub fn new(limits: BudgetLimits) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            limits,
            process: Pool::new(limits.process_bytes),
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// Body bytes held now, across every connection.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.process.used.load(Ordering::Acquire)
    }

    /// Registers a new connection from `peer`; `None` when that address holds its share already.
    pub fn connect(self: &Arc<Self>, peer: IpAddr) -> Option<ConnectionBudget> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let entry = peers.entry(peer).or_insert_with(|| Peer {
            connections: 0,
            bytes: Pool::new(self.limits.peer_bytes),
        });
        if entry.connections >= self.limits.peer_connections {
            return None;
        }
        entry.connections += 1;
        Some(ConnectionBudget {
            inner: Arc::new(Shares {
                registry: Some((self.clone(), peer)),
                connection: Pool::new(self.limits.connection_bytes),
                peer: entry.bytes.clone(),
                process: self.process.clone(),
            }),
        })
    }

    /// A budget for requests that come without a connection (router tests): the process pool alone.
    pub fn detached(self: &Arc<Self>) -> ConnectionBudget {
        ConnectionBudget {
            inner: Arc::new(Shares {
                registry: None,
                connection: Pool::new(usize::MAX),
                peer: Pool::new(usize::MAX),
                process: self.process.clone(),
            }),
        }
    }
}

#[derive(Debug)]
struct Shares {
    /// Where to unregister the connection when the last handle goes.
    registry: Option<(Arc<BodyBudget>, IpAddr)>,
    connection: Arc<Pool>,
    peer: Arc<Pool>,
    process: Arc<Pool>,
}

impl Drop for Shares {
    fn drop(&mut self) {
        let Some((budget, ip)) = &self.registry else {
            return;
        };
        let mut peers = budget.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(peer) = peers.get_mut(ip) {
            peer.connections = peer.connections.saturating_sub(1);
            if peer.connections == 0 {
                peers.remove(ip);
            }
        }
    }
}

/// A connection's view of the budget; cloned into every request it carries (a request extension).
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    inner: Arc<Shares>,
}

impl ConnectionBudget {
    /// An empty hold on this connection's budget, to grow with [`Held::grow`].
    pub fn hold(&self) -> Held {
        Held {
            shares: self.inner.clone(),
            bytes: 0,
        }
    }
}

/// Bytes reserved for one request body; given back when dropped.
#[derive(Debug)]
pub struct Held {
    shares: Arc<Shares>,
    bytes: usize,
}

impl Held {
    /// Reserves `n` more bytes from the connection's, the address's and the process's pools, or none.
    pub fn grow(&mut self, n: usize) -> Result<(), Exhausted> {
        let s = &self.shares;
        if !s.connection.try_take(n) {
            return Err(Exhausted::Connection);
        }
        if !s.peer.try_take(n) {
            s.connection.give(n);
            return Err(Exhausted::Peer);
        }
        // The part of these bytes past the body's head may not use the reserve.
        let head = SMALL_BODY.saturating_sub(self.bytes).min(n);
        let tail = n - head;
        let ceiling = s.process.limit - s.process.limit / 3;
        let taken = match (head, tail) {
            (_, 0) => s.process.try_take(n),
            (0, _) => s.process.try_take_below(n, ceiling),
            _ => {
                s.process.try_take_below(tail, ceiling)
                    && (s.process.try_take(head) || {
                        s.process.give(tail);
                        false
                    })
            }
        };
        if !taken {
            s.peer.give(n);
            s.connection.give(n);
            return Err(Exhausted::Process);
        }
        self.bytes += n;
        Ok(())
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let s = &self.shares;
        s.process.give(self.bytes);
        s.peer.give(self.bytes);
        s.connection.give(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: usize = SMALL_BODY;

    fn limits() -> BudgetLimits {
        BudgetLimits {
            process_bytes: 96 * K,
            peer_bytes: 60 * K,
            connection_bytes: 40 * K,
            peer_connections: 2,
        }
    }

    #[test]
    fn each_bound_refuses_in_turn_and_dropping_gives_back() {
        let budget = BodyBudget::new(limits());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let c1 = budget.connect(a).unwrap();
        let mut h1 = c1.hold();
        h1.grow(30 * K).unwrap();
        assert_eq!(h1.grow(20 * K), Err(Exhausted::Connection));
        let c2 = budget.connect(a).unwrap();
        let mut h2 = c2.hold();
        assert_eq!(h2.grow(35 * K), Err(Exhausted::Peer));
        h2.grow(30 * K).unwrap();
        assert!(
            budget.connect(a).is_none(),
            "third connection from one address"
        );
        // 60 of 96 held; large bodies may fill two thirds, 64, only.
        let cb = budget.connect(b).unwrap();
        let mut hb = cb.hold();
        hb.grow(4 * K).unwrap();
        let cb2 = budget.connect(b).unwrap();
        let mut hb2 = cb2.hold();
        assert_eq!(
            hb2.grow(2 * K),
            Err(Exhausted::Process),
            "a large body past the reserve"
        );
        // The heads of bodies may use the reserve: one ordinary review still fits...
        hb2.grow(K / 8).unwrap();
        assert_eq!(budget.in_flight(), 64 * K + K / 8);
        drop(h1);
        hb2.grow(30 * K).unwrap();
        drop((h2, hb, hb2));
        assert_eq!(budget.in_flight(), 0);
    }

    #[test]
    fn a_closed_connection_frees_its_addresses_slot() {
        let budget = BodyBudget::new(limits());
        let a: IpAddr = "::1".parse().unwrap();
        let c1 = budget.connect(a).unwrap();
        let c2 = budget.connect(a).unwrap();
        assert!(budget.connect(a).is_none());
        let held = c2.hold();
        drop(c2);
        // A request still in flight keeps the connection's slot until it finishes.
        assert!(budget.connect(a).is_none());
        drop(held);
        let _c3 = budget.connect(a).unwrap();
        drop(c1);
        assert_eq!(
            budget.peers.lock().unwrap().get(&a).map(|p| p.connections),
            Some(1)
        );
    }
}
