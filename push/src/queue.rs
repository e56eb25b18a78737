//! [`Latest`]: the notices waiting to be sent, at most one per key (an MQTT topic, a webhook
//! and project): a newer serial replaces the one waiting, since a mirror only needs to hear
//! the newest. It holds at most `cap` keys; a notice for a new key beyond that is dropped and
//! counted, and the first drop since the queue last had room is logged.
//!
//! It must not block: every method takes a short synchronous lock that is never held across
//! an await, so the indexer (the caller of [`Latest::offer`]) never waits on a broker.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// What [`Latest::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued under a key that had nothing waiting.
    Queued,
    /// Replaced an older notice waiting under the same key.
    Replaced,
    /// The queue was full of other keys: dropped (and counted).
    Dropped,
}

/// Notices waiting, newest per key.
#[derive(Debug)]
pub struct Latest<K, V> {
    waiting: Mutex<Waiting<K, V>>,
    cap: usize,
    dropped: AtomicU64,
    ready: Notify,
}

#[derive(Debug)]
struct Waiting<K, V> {
    notices: HashMap<K, V>,
    /// Whether a drop was logged since the queue last had room.
    warned: bool,
}

impl<K: Eq + Hash + Clone + std::fmt::Debug, V> Latest<K, V> {
    /// An empty queue holding at most `cap` keys (at least one).
    pub fn new(cap: usize) -> Latest<K, V> {
        Latest {
            waiting: Mutex::new(Waiting {
                notices: HashMap::new(),
                warned: false,
            }),
            cap: cap.max(1),
            dropped: AtomicU64::new(0),
            ready: Notify::new(),
        }
    }

    /// Queues `value` under `key`, replacing what waits there; wakes the sender.
    pub fn offer(&self, key: K, value: V) -> Offered {
        let offered = {
            let mut w = self.lock();
            let full = w.notices.len() >= self.cap;
            match w.notices.get_mut(&key) {
                Some(v) => {
                    *v = value;
                    Offered::Replaced
                }
                None if full => {
                    let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if !w.warned {
                        w.warned = true;
                        tracing::warn!(
                            ?key,
                            cap = self.cap,
                            dropped,
                            "push queue full (is the broker or webhook down?); dropping notices until it drains"
                        );
                    }
                    Offered::Dropped
                }
                None => {
                    w.notices.insert(key, value);
                    Offered::Queued
                }
            }
        };
        if offered != Offered::Dropped {
            self.ready.notify_one();
        }
        offered
    }

    /// Takes up to `n` notices out of the queue.
    pub fn take(&self, n: usize) -> Vec<(K, V)> {
        let mut w = self.lock();
        let keys: Vec<K> = w.notices.keys().take(n).cloned().collect();
        let taken = keys
            .into_iter()
            .filter_map(|k| w.notices.remove_entry(&k))
            .collect();
        if w.notices.len() < self.cap {
            w.warned = false;
        }
        taken
    }

    /// Puts back a notice that could not be sent, unless a newer one waits under its key
    /// (or the queue is full: then it is dropped and counted).
    pub fn put_back(&self, key: K, value: V) {
        let mut w = self.lock();
        if w.notices.contains_key(&key) {
            return;
        }
        if w.notices.len() >= self.cap {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        w.notices.insert(key, value);
    }

    /// Whether a notice waits under `key`.
    pub fn holds(&self, key: &K) -> bool {
        self.lock().notices.contains_key(key)
    }

    /// Notices waiting.
    pub fn len(&self) -> usize {
        self.lock().notices.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notices dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Returns once a notice was offered since the last call (at once if one was offered
    /// while nobody waited).
    pub async fn offered(&self) {
        self.ready.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting<K, V>> {
        // A panic while holding this lock leaves a map that is still consistent.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_serial_per_key_is_kept_and_overflow_is_counted() {
        let q: Latest<&str, &str> = Latest::new(2);
        assert_eq!(q.offer("a", "1"), Offered::Queued, "a new key is queued");
        assert_eq!(
            q.offer("a", "2"),
            Offered::Replaced,
            "a newer serial replaces"
        );
        assert_eq!(q.offer("b", "1"), Offered::Queued);
        assert_eq!(
            q.offer("c", "1"),
            Offered::Dropped,
            "a third key is over the cap"
        );
        assert_eq!(
            q.offer("a", "3"),
            Offered::Replaced,
            "a held key is never dropped"
        );
        assert_eq!(q.dropped(), 1);
        let mut taken = q.take(10);
        taken.sort();
        assert_eq!(taken, [("a", "3"), ("b", "1")]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_notice_put_back_never_replaces_a_newer_one() {
        let q: Latest<&str, &str> = Latest::new(4);
        q.offer("a", "2");
        q.put_back("a", "1");
        q.put_back("b", "1");
        let mut taken = q.take(10);
        taken.sort();
        assert_eq!(taken, [("a", "2"), ("b", "1")]);
    }

    #[test]
    fn take_takes_at_most_n() {
        let q: Latest<u8, ()> = Latest::new(8);
        for k in 0..5 {
            q.offer(k, ());
        }
        assert_eq!(q.take(3).len(), 3);
        assert_eq!(q.len(), 2);
    }
}
