//! The per-namespace GPU-equivalents index the webhook keeps in cluster mode: a small projection of each
//! live GPU pod (no Pod objects), namespace totals kept up to date as the Pod watch reports, and the
//! admissions still in flight (reservations), so concurrent admissions see each other.
//!
//! Reservations: a pod admitted into a budgeted namespace reserves its GPU-equivalents until the watch
//! sees a new pod in that namespace holding the same amount (any such pod: reservations of one amount
//! are interchangeable, so the total is right whichever is released) or [`RESERVATION_TTL`] passes (the
//! pod was refused after us, by another webhook or the API server). Dry runs never reserve.
//!
//! With several webhook replicas each keeps its own reservations: a replica sees the others'
//! admissions only once their pods are in its watch, so a namespace can end at most the other
//! replicas' in-flight admissions over its budget (README, "Budgets").
//!
//! No clock is read here: callers pass `now`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpu_slicer_core::budget::Holding;
use gpu_slicer_core::equivalents::Usage;
use gpu_slicer_core::gpus::Gpus;

/// How long an admission's reservation waits for its pod to show up in the watch.
pub const RESERVATION_TTL: Duration = Duration::from_secs(30);

/// One live GPU pod, as small as it can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// A hash of the pod's uid: a recreated pod of the same name is a new pod.
    uid: u64,
    held: u64,
    requested: u32,
}

/// A namespace's totals over its live GPU pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub pods: u64,
    pub held: Gpus,
    pub requested: u64,
}

#[derive(Debug)]
struct Reservation {
    id: u64,
    namespace: Arc<str>,
    held: Gpus,
    expires: Instant,
}

/// Live GPU pods by (namespace, name).
type Pods = HashMap<(Arc<str>, Box<str>), Entry>;

#[derive(Debug, Default)]
struct Inner {
    pods: Pods,
    totals: HashMap<Arc<str>, Totals>,
    /// A re-list in progress (the watch restarted): the new set, swapped in when complete.
    relist: Option<Pods>,
    reservations: Vec<Reservation>,
    next_id: u64,
}

/// The index; shared by the Pod watch, the admission path and `/metrics`.
#[derive(Debug, Default)]
pub struct UsageIndex {
    inner: Mutex<Inner>,
    synced: AtomicBool,
}

fn uid_hash(uid: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    h.finish()
}

impl Inner {
    fn intern(&self, namespace: &str) -> Arc<str> {
        self.totals
            .get_key_value(namespace)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(namespace))
    }

    fn add(&mut self, namespace: &Arc<str>, e: Entry, sign: i8) {
        let t = self.totals.entry(namespace.clone()).or_default();
        let held = Gpus::from_units(e.held);
        if sign > 0 {
            t.pods += 1;
            t.held = t.held.saturating_add(held);
            t.requested += u64::from(e.requested);
        } else {
            t.pods = t.pods.saturating_sub(1);
            t.held = t.held.saturating_sub(held);
            t.requested = t.requested.saturating_sub(u64::from(e.requested));
        }
        if t.pods == 0 {
            self.totals.remove(namespace);
        }
    }

    /// A pod the watch sees for the first time releases one reservation of its amount.
    fn release_matching(&mut self, namespace: &str, held: u64) {
        if let Some(i) = self
            .reservations
            .iter()
            .position(|r| &*r.namespace == namespace && r.held.units() == held)
        {
            self.reservations.remove(i);
        }
    }

    fn rebuild_totals(&mut self) {
        self.totals.clear();
        let pods: Vec<_> = self.pods.iter().map(|(k, e)| (k.0.clone(), *e)).collect();
        for (ns, e) in pods {
            self.add(&ns, e, 1);
        }
    }
}

impl UsageIndex {
    pub fn new() -> Arc<UsageIndex> {
        Arc::new(UsageIndex::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the watch has listed every pod once.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// A pod added or changed. `live`: not finished and not being deleted; pods holding nothing are
    /// not kept.
    pub fn apply(&self, namespace: &str, name: &str, uid: &str, usage: Usage, live: bool) {
        let mut inner = self.lock();
        let ns = inner.intern(namespace);
        let entry = Entry {
            uid: uid_hash(uid),
            held: usage.held.units(),
            requested: u32::try_from(usage.requested).unwrap_or(u32::MAX),
        };
        let key = (ns.clone(), Box::from(name));
        if let Some(relist) = inner.relist.as_mut() {
            if live && usage.is_gpu() {
                relist.insert(key, entry);
            }
            return;
        }
        let old = inner.pods.remove(&key);
        if let Some(old) = old {
            inner.add(&ns, old, -1);
        }
        if live && usage.is_gpu() {
            if old.is_none_or(|o| o.uid != entry.uid) {
                inner.release_matching(namespace, entry.held);
            }
            inner.add(&ns, entry, 1);
            inner.pods.insert(key, entry);
        }
    }

    /// A pod deleted.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut inner = self.lock();
        let key = (Arc::<str>::from(namespace), Box::<str>::from(name));
        if let Some(relist) = inner.relist.as_mut() {
            relist.remove(&key);
        }
        if let Some(old) = inner.pods.remove(&key) {
            inner.add(&key.0, old, -1);
        }
    }

    /// The watch restarted: a full list follows ([`UsageIndex::apply`] fills it).
    pub fn relist_started(&self) {
        self.lock().relist = Some(HashMap::new());
    }

    /// The full list is in: it replaces the index (pods new to it release reservations).
    pub fn relist_done(&self) {
        let mut inner = self.lock();
        if let Some(new) = inner.relist.take() {
            let fresh: Vec<(Arc<str>, u64)> = new
                .iter()
                .filter(|(k, e)| inner.pods.get(*k).is_none_or(|o| o.uid != e.uid))
                .map(|(k, e)| (k.0.clone(), e.held))
                .collect();
            for (ns, held) in fresh {
                inner.release_matching(&ns, held);
            }
            inner.pods = new;
            inner.pods.shrink_to_fit();
            inner.rebuild_totals();
        }
        drop(inner);
        self.synced.store(true, Ordering::Release);
    }

    /// What `namespace` holds now: pods, and reservations not expired at `now`.
    pub fn holding(&self, namespace: &str, now: Instant) -> Holding {
        let mut inner = self.lock();
        inner.reservations.retain(|r| r.expires > now);
        Self::holding_locked(&inner, namespace)
    }

    fn holding_locked(inner: &Inner, namespace: &str) -> Holding {
        Holding {
            pods: inner.totals.get(namespace).map_or(Gpus::ZERO, |t| t.held),
            in_flight: inner
                .reservations
                .iter()
                .filter(|r| &*r.namespace == namespace)
                .map(|r| r.held)
                .sum(),
        }
    }

    /// Checks and reserves in one step, so concurrent admissions see each other: `fits` decides on
    /// what the namespace holds; when it says yes, `asks` is reserved until its pod is seen.
    pub fn reserve<E>(
        &self,
        namespace: &str,
        asks: Usage,
        now: Instant,
        fits: impl FnOnce(Holding) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut inner = self.lock();
        inner.reservations.retain(|r| r.expires > now);
        fits(Self::holding_locked(&inner, namespace))?;
        inner.next_id += 1;
        let id = inner.next_id;
        let ns = inner.intern(namespace);
        inner.reservations.push(Reservation {
            id,
            namespace: ns,
            held: asks.held,
            expires: now + RESERVATION_TTL,
        });
        Ok(id)
    }

    /// Drops a reservation (the answer could not be sent).
    pub fn release(&self, id: u64) {
        self.lock().reservations.retain(|r| r.id != id);
    }

    /// Every namespace with live GPU pods, and its totals.
    pub fn snapshot(&self) -> Vec<(String, Totals)> {
        let inner = self.lock();
        let mut rows: Vec<_> = inner
            .totals
            .iter()
            .map(|(ns, t)| (ns.to_string(), *t))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    /// Live GPU pods in the index.
    pub fn len(&self) -> usize {
        self.lock().pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(held: Gpus) -> Usage {
        Usage { held, requested: 1 }
    }

    #[test]
    fn totals_follow_the_pods_and_reservations_are_released_when_seen() {
        let idx = UsageIndex::default();
        idx.relist_started();
        idx.apply("a", "p1", "u1", u(Gpus::ONE), true);
        idx.apply("a", "done", "u0", u(Gpus::ONE), false);
        idx.relist_done();
        let now = Instant::now();
        assert_eq!(idx.holding("a", now).pods, Gpus::ONE);
        let budget = Gpus::whole(2);
        let fits = |h: Holding| {
            if h.total().saturating_add(Gpus::ONE) <= budget {
                Ok(())
            } else {
                Err(())
            }
        };
        assert!(idx.reserve("a", u(Gpus::ONE), now, fits).is_ok());
        // The second concurrent admission sees the first.
        assert!(idx.reserve("a", u(Gpus::ONE), now, fits).is_err());
        // The pod appears: its reservation goes, its amount stays counted once.
        idx.apply("a", "p2", "u2", u(Gpus::ONE), true);
        assert_eq!(
            idx.holding("a", now),
            Holding {
                pods: Gpus::whole(2),
                in_flight: Gpus::ZERO
            }
        );
        // Finished, then deleted: room again.
        idx.apply("a", "p2", "u2", u(Gpus::ONE), false);
        idx.delete("a", "p1");
        assert_eq!(idx.holding("a", now).total(), Gpus::ZERO);
        // A reservation whose pod never comes expires.
        assert!(idx.reserve("a", u(Gpus::ONE), now, fits).is_ok());
        assert_eq!(idx.holding("a", now).in_flight, Gpus::ONE);
        assert_eq!(
            idx.holding("a", now + RESERVATION_TTL).in_flight,
            Gpus::ZERO
        );
    }
}
