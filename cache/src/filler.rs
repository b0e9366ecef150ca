//! Writing entries off the event loop: each cache has one thread that
//! creates, writes and renames its entries' files, fed through a channel;
//! a request hands it the body's pieces (reference-counted, no copy) and
//! never waits on the disk. What is queued for a cache is bounded: a fill
//! that would pass the bound is given up (not stored), so a disk slower
//! than the network costs entries, never memory or the loop.
//!
//! nginx counterpart: `aio threads` for the temp file of a cached
//! response (`ngx_thread_write_chain_to_file`), with the file renamed into
//! place by `ngx_http_file_cache_update`.

use crate::entry::Writer;
use crate::key::Key;
use crate::zone::Zone;
use bytes::Bytes;
use http::HeaderMap;
use pingora_http::ResponseHeader;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// Most bytes queued for one cache's thread at once.
const MOST_QUEUED: usize = 32 << 20;

/// What a fill asks of the thread.
pub(crate) enum Job {
    Start {
        id: u64,
        key: Key,
        headers: HeaderMap,
        header: Box<ResponseHeader>,
        fresh: Duration,
    },
    Append {
        id: u64,
        data: Bytes,
    },
    /// Store it, or give it up.
    Finish {
        id: u64,
        reply: oneshot::Sender<io::Result<u64>>,
    },
    Abort {
        id: u64,
    },
}

/// The sending end a cache keeps.
pub(crate) struct Jobs {
    tx: Sender<Job>,
    queued: Arc<AtomicUsize>,
    next: AtomicU64,
}

/// Start the thread of cache `name`; it ends when the cache is dropped.
pub(crate) fn spawn(name: &str, zone: Weak<Zone>) -> io::Result<Jobs> {
    let (tx, rx) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let q = queued.clone();
    std::thread::Builder::new()
        .name(format!("ferry-cache-{name}-w"))
        .spawn(move || work(zone, rx, q))?;
    Ok(Jobs {
        tx,
        queued,
        next: AtomicU64::new(0),
    })
}

/// An entry being filled, as the request holds it.
pub struct Filling {
    id: u64,
    tx: Sender<Job>,
    queued: Arc<AtomicUsize>,
    written: u64,
    /// Given up: nothing more is sent.
    failed: bool,
    done: bool,
}

impl Jobs {
    /// Begin an entry for `key` (the variant a request with `headers`
    /// selects) holding `header`, fresh for `fresh`.
    pub(crate) fn start(
        &self,
        key: &Key,
        headers: &HeaderMap,
        header: &ResponseHeader,
        fresh: Duration,
    ) -> Filling {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let job = Job::Start {
            id,
            key: key.clone(),
            headers: headers.clone(),
            header: Box::new(header.clone()),
            fresh,
        };
        let failed = self.tx.send(job).is_err();
        Filling {
            id,
            tx: self.tx.clone(),
            queued: self.queued.clone(),
            written: 0,
            failed,
            done: false,
        }
    }
}

impl Filling {
    /// Queue one piece of the body; `false` once the fill was given up.
    pub fn append(&mut self, data: &Bytes) -> bool {
        if self.failed {
            return false;
        }
        let n = data.len();
        if self.queued.fetch_add(n, Ordering::AcqRel) + n > MOST_QUEUED {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            log::warn!("cache: the disk is behind ({MOST_QUEUED} bytes queued); not stored");
            self.give_up();
            return false;
        }
        let job = Job::Append {
            id: self.id,
            data: data.clone(),
        };
        if self.tx.send(job).is_err() {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.failed = true;
        }
        self.written += n as u64;
        !self.failed
    }

    /// Bytes of body handed over so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Put the entry in place: its size on disk.
    pub async fn store(mut self) -> io::Result<u64> {
        if self.failed {
            return Err(io::Error::other("the entry was given up"));
        }
        let (reply, answer) = oneshot::channel();
        self.done = true;
        let job = Job::Finish { id: self.id, reply };
        self.tx
            .send(job)
            .map_err(|_| io::Error::other("the cache is gone"))?;
        answer
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the cache is gone")))
    }

    fn give_up(&mut self) {
        if !self.failed {
            self.failed = true;
            let _ = self.tx.send(Job::Abort { id: self.id });
        }
    }
}

impl Drop for Filling {
    fn drop(&mut self) {
        if !self.done {
            self.give_up();
        }
    }
}

/// The thread: each job in order; a writer dropped unstored removes its
/// temp file.
fn work(zone: Weak<Zone>, rx: Receiver<Job>, queued: Arc<AtomicUsize>) {
    let mut open: HashMap<u64, (Writer, Key, Duration)> = HashMap::new();
    while let Ok(job) = rx.recv() {
        let Some(z) = zone.upgrade() else { return };
        match job {
            Job::Start {
                id,
                key,
                headers,
                header,
                fresh,
            } => match z.writer(&key, &headers, &header, fresh) {
                Ok((w, target)) => {
                    open.insert(id, (w, target, fresh));
                }
                Err(e) => log::error!("cache {}: cannot start an entry: {e}", z.name),
            },
            Job::Append { id, data } => {
                queued.fetch_sub(data.len(), Ordering::AcqRel);
                if let Some((w, _, _)) = open.get_mut(&id) {
                    if let Err(e) = w.append(&data) {
                        log::error!("cache {}: writing an entry: {e}; not stored", z.name);
                        open.remove(&id);
                    }
                }
            }
            Job::Finish { id, reply } => {
                let stored = match open.remove(&id) {
                    Some((w, key, fresh)) => z.stored(&key, w, fresh),
                    None => Err(io::Error::other("the entry could not be written")),
                };
                let _ = reply.send(stored);
            }
            Job::Abort { id } => {
                open.remove(&id);
            }
        }
    }
}
