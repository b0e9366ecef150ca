//! A `limit_conn` zone's counts: the requests of each key being served
//! now. A request holds a [`Held`] from its admission to its end; dropping
//! it (the response done, the client gone, an error, a tunnel closed, the
//! request's future dropped) gives the place back.
//!
//! nginx counterpart: `ngx_http_limit_conn_handler` and its pool cleanup
//! `ngx_http_limit_conn_cleanup`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A zone's counts by key; a key leaves when its count is back to 0.
pub(crate) struct Counts {
    map: Mutex<HashMap<Box<[u8]>, u32>>,
    max_keys: usize,
}

/// Why a request got no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The key has `conn` requests being served.
    Key,
    /// The zone counts `max_keys` keys (nginx: no memory for the node).
    Zone,
}

/// One place taken in a zone, given back when dropped.
pub(crate) struct Held {
    counts: Arc<Counts>,
    key: Box<[u8]>,
}

impl Counts {
    pub(crate) fn new(max_keys: usize) -> Arc<Counts> {
        Arc::new(Counts {
            map: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<[u8]>, u32>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a place for `key` when it has fewer than `conn`.
    pub(crate) fn take(self: &Arc<Self>, key: &[u8], conn: u32) -> Result<Held, Full> {
        let mut map = self.lock();
        let full = map.len() >= self.max_keys;
        match map.get_mut(key) {
            Some(n) if *n >= conn => return Err(Full::Key),
            Some(n) => *n += 1,
            None if full => return Err(Full::Zone),
            None => {
                map.insert(key.into(), 1);
            }
        }
        Ok(Held {
            counts: self.clone(),
            key: key.into(),
        })
    }

    /// The requests of `key` being served now.
    #[cfg(test)]
    pub(crate) fn count(&self, key: &[u8]) -> u32 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    /// Keys counted now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.counts.lock();
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_given_back_on_drop() {
        let c = Counts::new(10);
        let a = c.take(b"k", 2).unwrap();
        let b = c.take(b"k", 2).unwrap();
        assert_eq!(c.take(b"k", 2).err(), Some(Full::Key));
        assert!(c.take(b"other", 2).is_ok());
        drop(a);
        assert_eq!(c.count(b"k"), 1);
        let _c = c.take(b"k", 2).unwrap();
        drop(b);
        drop(_c);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_full_zone_refuses_new_keys() {
        let c = Counts::new(1);
        let _a = c.take(b"a", 5).unwrap();
        assert_eq!(c.take(b"b", 5).err(), Some(Full::Zone));
        assert!(c.take(b"a", 5).is_ok());
    }
}
