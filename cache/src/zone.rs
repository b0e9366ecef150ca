//! One cache (an entry of `caches:`): its directory, the index of what it
//! holds, and eviction.
//!
//! The files are the truth: a lookup opens the entry's file, so an entry
//! stored before a restart (or by the process a graceful upgrade
//! replaced) is found at once. The index knows each file's size and last
//! use, for `max_size` (pingora-cache's LRU eviction manager evicts the
//! least recently used past it), `max_keys` (a second LRU, one unit per
//! key, holds the stored keys and the `min_uses` counts together and
//! bounds the index's memory) and `inactive` (a sweep every few seconds
//! removes entries unused that long). At start a loader thread
//! walks the directory into the index, removing what is corrupt or was
//! left half-written.
//!
//! nginx counterpart: `ngx_http_file_cache_t`: the shared-memory tree of
//! nodes, the cache manager (`ngx_http_file_cache_manager`: `max_size`
//! and `inactive`) and the cache loader (`ngx_http_file_cache_loader`).

use crate::entry::{self, Entry, Kind, Writer};
use crate::filler::{self, Filling};
use crate::key::{self, Hash, Key, Values};
use ferry_conf::CacheZone;
use http::HeaderMap;
use pingora_cache::eviction::{lru, CacheEntryKey, CacheEntryKeyRef, EvictionManager};
use pingora_cache::key::CompactCacheKey;
use pingora_http::ResponseHeader;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

struct Meta {
    size: u64,
    used: Instant,
    primary: Hash,
}

/// One cache.
pub struct Zone {
    pub name: String,
    pub dir: PathBuf,
    tmp: PathBuf,
    inactive: Duration,
    /// The entries by size, least recently used first (`max_size`).
    lru: lru::Manager<1>,
    /// Every key tracked, entries and use counts alike, one each, least
    /// recently used first (`max_keys`).
    keys: lru::Manager<1>,
    index: Mutex<HashMap<Hash, Meta>>,
    /// Requests for keys not stored yet (`min_uses`).
    uses: Mutex<HashMap<Hash, (u32, Instant)>>,
    /// Keys whose expired entry a background update is bringing anew
    /// (nginx's `node->updating`): one update at a time per key.
    updating: Mutex<HashSet<Hash>>,
    /// The thread that writes the entries (`None`: it could not start,
    /// nothing is stored).
    jobs: Option<filler::Jobs>,
    /// Entries kept open after a lookup read them (nginx's
    /// `open_file_cache`): the next lookup of the key takes one here, on
    /// the event loop, when its file is unchanged.
    open: Mutex<HashMap<Hash, Arc<Entry>>>,
}

/// The most entries kept open per cache (each holds a file descriptor,
/// its parsed header and the file's first read: 8 KiB at most, the whole
/// body of a small entry).
const OPEN_ENTRIES: usize = 256;

/// What a lookup found.
pub enum Found {
    /// A whole entry; `key` is the one it is filed under (a variant's).
    Entry(Arc<Entry>, Key),
    /// Nothing (or something corrupt, now removed).
    Missing,
}

fn compact(hash: Hash) -> CacheEntryKey {
    tagged(hash, "")
}

/// A key not stored yet, counted for `min_uses`, in the keys' LRU.
const USES: &str = "uses";

fn tagged(hash: Hash, tag: &str) -> CacheEntryKey {
    CacheEntryKey::key_only(CompactCacheKey {
        primary: hash,
        variance: None,
        user_tag: tag.into(),
    })
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds now.
pub fn now() -> i64 {
    unix(SystemTime::now())
}

impl Zone {
    /// Open (creating, 0700) the cache `name` and start its loader and
    /// sweeper.
    pub fn open(name: &str, conf: &CacheZone) -> io::Result<Arc<Zone>> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = PathBuf::from(&conf.path);
        let tmp = dir.join("tmp");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)?;
        // What a stopped process was writing is not an entry (this
        // process's own writers, of a cache a reload replaced, go on).
        for f in std::fs::read_dir(&tmp)?.flatten() {
            if !entry::written_here(&f.path()) {
                let _ = std::fs::remove_file(f.path());
            }
        }
        let zone = Arc::new_cyclic(|weak| Zone {
            jobs: filler::spawn(name, weak.clone())
                .map_err(|e| log::error!("cache {name}: no writer thread ({e}): nothing is stored"))
                .ok(),
            name: name.to_string(),
            dir,
            tmp,
            inactive: conf.inactive.get(),
            lru: lru::Manager::with_capacity(conf.max_size.as_usize().max(1), 1024),
            keys: lru::Manager::with_capacity(conf.max_keys.max(1), 1024),
            index: Mutex::new(HashMap::new()),
            uses: Mutex::new(HashMap::new()),
            updating: Mutex::new(HashSet::new()),
            open: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&zone);
        std::thread::Builder::new()
            .name(format!("ferry-cache-{name}"))
            .spawn(move || manage(weak))?;
        Ok(zone)
    }

    /// Mark `key` as being updated in the background; `false` when an
    /// update of it is already on its way (the caller answers UPDATING).
    pub fn begin_update(&self, key: &Key) -> bool {
        let mut updating = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        updating.insert(key.hash)
    }

    /// The background update of `key` is over, stored or not.
    pub fn end_update(&self, key: &Key) {
        let mut updating = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        updating.remove(&key.hash);
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<Hash, Meta>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `key` as a request with `headers` sees it (its
    /// variant, when the key's responses vary), read from the disk: for a
    /// blocking thread. What it reads is kept open for [`Zone::find_open`].
    pub fn find(&self, key: &Key, headers: &HeaderMap) -> Found {
        self.find_with(key, headers, |k| {
            let e = Arc::new(self.open_checked(k)?);
            self.keep_open(k.hash, &e);
            Some(e)
        })
        .unwrap_or(Found::Missing)
    }

    /// [`Zone::find`] from the entries kept open, without touching the
    /// disk (an `fstat` of each open file tells it is unchanged): for the
    /// event loop. `None` when the disk must be asked.
    pub fn find_open<V: Values + ?Sized>(&self, key: &Key, headers: &V) -> Option<Found> {
        self.find_with(key, headers, |k| {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let e = open.get(&k.hash)?.clone();
            if e.head.key != k.text || !e.unchanged() {
                open.remove(&k.hash);
                return None;
            }
            Some(e)
        })
    }

    /// A lookup with `entry` giving the file of a key: the key's, then its
    /// variant's when the key's responses vary. `None` when `entry` gave
    /// none.
    fn find_with<V: Values + ?Sized>(
        &self,
        key: &Key,
        headers: &V,
        entry: impl Fn(&Key) -> Option<Arc<Entry>>,
    ) -> Option<Found> {
        let first = entry(key)?;
        let (e, key) = match &first.head.kind {
            Kind::Response => (first, key.clone()),
            Kind::Vary(names) => {
                let variant = key.variant(names, headers);
                let e = entry(&variant)?;
                if e.head.kind != Kind::Response {
                    return None;
                }
                (e, variant)
            }
        };
        self.used(key.hash, e.size(), key.primary);
        Some(Found::Entry(e, key))
    }

    /// Keep `e`, just read whole for `hash`, open for the next lookups; past
    /// [`OPEN_ENTRIES`] one kept before goes.
    fn keep_open(&self, hash: Hash, e: &Arc<Entry>) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= OPEN_ENTRIES && !open.contains_key(&hash) {
            let some = open.keys().next().copied();
            if let Some(h) = some {
                open.remove(&h);
            }
        }
        open.insert(hash, e.clone());
    }

    /// The file of `hash` is no longer the one kept open, if any.
    fn close(&self, hash: &Hash) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(hash);
    }

    /// The file of `key`, if it is whole and is that key's. Only a file
    /// read and proven bad is removed; one that cannot be opened or read
    /// (no file descriptor left, an I/O error, not a regular file) is a
    /// miss and stays.
    fn open_checked(&self, key: &Key) -> Option<Entry> {
        let path = key::path_of(&self.dir, &key.hash);
        match entry::open(&path) {
            Ok(Some(e)) if e.head.key == key.text => Some(e),
            Ok(Some(_)) => None,
            Ok(None) => None,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                log::warn!(
                    "cache {}: {} is not a whole entry ({e}): removed",
                    self.name,
                    path.display()
                );
                self.remove(key.hash);
                None
            }
            Err(e) => {
                log::warn!(
                    "cache {}: cannot read {} ({e}): a miss",
                    self.name,
                    path.display()
                );
                None
            }
        }
    }

    fn used(&self, hash: Hash, size: u64, primary: Hash) {
        let mut index = self.index();
        let m = index.entry(hash).or_insert(Meta {
            size,
            used: Instant::now(),
            primary,
        });
        m.used = Instant::now();
        drop(index);
        self.lru
            .access(&compact(hash), size as usize, SystemTime::now());
        self.keys.access(&compact(hash), 1, SystemTime::now());
    }

    /// Start filling an entry for `key` (a request with `headers`) with
    /// `header`, fresh for `fresh`, on the cache's writer thread: the
    /// request hands it the body and never waits on the disk.
    pub fn fill(
        &self,
        key: &Key,
        headers: &HeaderMap,
        header: &ResponseHeader,
        fresh: Duration,
    ) -> Option<Filling> {
        Some(self.jobs.as_ref()?.start(key, headers, header, fresh))
    }

    /// Start storing a response for `key` (a request with `headers`),
    /// fresh for `fresh`. When the response varies, the key's file lists
    /// the names and the response goes to its variant's file.
    pub fn writer(
        &self,
        key: &Key,
        headers: &HeaderMap,
        header: &ResponseHeader,
        fresh: Duration,
    ) -> io::Result<(Writer, Key)> {
        let date = now();
        let expires = date.saturating_add(fresh.as_secs() as i64);
        let names = entry::vary_names(header);
        let target = if names.is_empty() {
            key.clone()
        } else {
            let mut list =
                ResponseHeader::build(200, None).map_err(|e| io::Error::other(e.to_string()))?;
            list.insert_header(http::header::VARY, names.join(", "))
                .map_err(|e| io::Error::other(e.to_string()))?;
            let dest = key::path_of(&self.dir, &key.hash);
            let kind = Kind::Vary(names.clone());
            let w = Writer::create(&self.tmp, dest, &kind, &key.text, &list, date, expires)?;
            let size = w.commit()?;
            self.committed(key.hash, size, key.primary, SystemTime::now() + fresh);
            key.variant(&names, headers)
        };
        let dest = key::path_of(&self.dir, &target.hash);
        let w = Writer::create(
            &self.tmp,
            dest,
            &Kind::Response,
            &target.text,
            header,
            date,
            expires,
        )?;
        Ok((w, target))
    }

    /// A writer's entry is in place: index it and evict past `max_size`.
    /// Its size on disk.
    pub fn stored(&self, key: &Key, writer: Writer, fresh: Duration) -> io::Result<u64> {
        let size = writer.commit()?;
        self.committed(key.hash, size, key.primary, SystemTime::now() + fresh);
        Ok(size)
    }

    fn committed(&self, hash: Hash, size: u64, primary: Hash, fresh_until: SystemTime) {
        self.close(&hash);
        self.index().insert(
            hash,
            Meta {
                size,
                used: Instant::now(),
                primary,
            },
        );
        if self
            .uses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&primary)
            .is_some()
        {
            self.keys
                .remove(CacheEntryKeyRef::from(&tagged(primary, USES)));
        }
        let evicted = self.lru.admit(compact(hash), size as usize, fresh_until);
        for e in evicted {
            let h = e.key().primary;
            self.close(&h);
            self.index().remove(&h);
            self.keys.remove(CacheEntryKeyRef::from(&compact(h)));
            let _ = std::fs::remove_file(key::path_of(&self.dir, &h));
        }
        self.admit_key(compact(hash), fresh_until);
    }

    /// Track one more key; past `max_keys` the least recently used one
    /// goes: an entry with its file, a use count with its count.
    fn admit_key(&self, key: CacheEntryKey, until: SystemTime) {
        for gone in self.keys.admit(key, 1, until) {
            let h = gone.key().primary;
            if &*gone.key().user_tag == USES {
                self.uses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&h);
            } else {
                log::debug!(
                    "cache {}: {} past max_keys: removed",
                    self.name,
                    key::hex(&h)
                );
                self.remove(h);
            }
        }
    }

    /// A revalidated entry is fresh again for `fresh`.
    pub fn refresh(&self, path: &Path, fresh: Duration) -> io::Result<()> {
        let name = path.file_name().and_then(|n| n.to_str());
        if let Some(hash) = name.and_then(key::from_hex) {
            self.close(&hash);
        }
        let date = now();
        entry::refresh(path, date, date.saturating_add(fresh.as_secs() as i64))
    }

    /// Remove one file and forget it.
    pub fn remove(&self, hash: Hash) {
        self.close(&hash);
        let _ = std::fs::remove_file(key::path_of(&self.dir, &hash));
        if self.index().remove(&hash).is_some() {
            self.lru.remove(CacheEntryKeyRef::from(&compact(hash)));
        }
        self.keys.remove(CacheEntryKeyRef::from(&compact(hash)));
    }

    /// Remove every entry of the key `text` (all its variants): how many
    /// files went.
    pub fn purge(&self, text: &str) -> usize {
        let primary = Key::new(text.to_string()).hash;
        let mut hashes: Vec<Hash> = self
            .index()
            .iter()
            .filter(|(h, m)| m.primary == primary || **h == primary)
            .map(|(h, _)| *h)
            .collect();
        if !hashes.contains(&primary) {
            hashes.push(primary);
        }
        let mut removed = 0;
        for h in hashes {
            if std::fs::remove_file(key::path_of(&self.dir, &h)).is_ok() {
                removed += 1;
            }
            self.remove(h);
        }
        removed
    }

    /// Count one more request for `key`, not stored yet: the count so far
    /// (nginx `min_uses`, counted within `inactive`).
    pub fn count_use(&self, key: &Key) -> u32 {
        let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        let new = !uses.contains_key(&key.primary);
        let e = uses.entry(key.primary).or_insert((0, Instant::now()));
        if e.1.elapsed() > self.inactive {
            *e = (0, Instant::now());
        }
        e.0 += 1;
        e.1 = Instant::now();
        let count = e.0;
        drop(uses);
        let tracked = tagged(key.primary, USES);
        if new {
            self.admit_key(tracked, SystemTime::now() + self.inactive);
        } else {
            self.keys.access(&tracked, 1, SystemTime::now());
        }
        count
    }

    /// Keys tracked: entries and use counts (at most `max_keys`).
    pub fn keys(&self) -> usize {
        self.keys.total_items()
    }

    /// Entries (files) indexed.
    pub fn entries(&self) -> usize {
        self.index().len()
    }

    /// Bytes on disk indexed.
    pub fn size(&self) -> u64 {
        self.index().values().map(|m| m.size).sum()
    }

    /// Remove what was not used within `inactive`.
    fn sweep(&self) {
        let old: Vec<Hash> = self
            .index()
            .iter()
            .filter(|(_, m)| m.used.elapsed() >= self.inactive)
            .map(|(h, _)| *h)
            .collect();
        for h in old {
            log::debug!("cache {}: {} inactive: removed", self.name, key::hex(&h));
            self.remove(h);
        }
        let inactive = self.inactive;
        let mut gone = Vec::new();
        self.uses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|h, (_, t)| {
                let keep = t.elapsed() < inactive;
                if !keep {
                    gone.push(*h);
                }
                keep
            });
        for h in gone {
            self.keys.remove(CacheEntryKeyRef::from(&tagged(h, USES)));
        }
    }

    /// Index what the directory holds (the cache loader).
    fn load(&self) {
        let mut found = 0;
        for l1 in dir_entries(&self.dir) {
            for l2 in dir_entries(&l1) {
                for f in dir_entries(&l2) {
                    let Some(hash) = f
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(key::from_hex)
                    else {
                        continue;
                    };
                    if self.index().contains_key(&hash) {
                        continue;
                    }
                    match entry::open(&f) {
                        Ok(Some(e)) => {
                            let primary = match &e.head.kind {
                                Kind::Response => {
                                    Key::new(e.head.key.lines().next().unwrap_or("").to_string())
                                        .hash
                                }
                                Kind::Vary(_) => hash,
                            };
                            let until = SystemTime::UNIX_EPOCH
                                + Duration::from_secs(e.head.expires.max(0) as u64);
                            self.committed(hash, e.size(), primary, until);
                            found += 1;
                        }
                        Ok(None) => {}
                        Err(err) if err.kind() != io::ErrorKind::InvalidData => {
                            log::warn!("cache {}: cannot read {} ({err})", self.name, f.display());
                        }
                        Err(err) => {
                            log::warn!(
                                "cache {}: {} is not a whole entry ({err}): removed",
                                self.name,
                                f.display()
                            );
                            let _ = std::fs::remove_file(&f);
                        }
                    }
                }
            }
        }
        log::info!(
            "cache {}: {found} entries found in {}",
            self.name,
            self.dir.display()
        );
    }
}

fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()) != Some("tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// The zone's own thread: load, then sweep until the zone is dropped.
fn manage(zone: Weak<Zone>) {
    let every = match zone.upgrade() {
        Some(z) => {
            z.load();
            (z.inactive / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
        }
        None => return,
    };
    loop {
        std::thread::sleep(every);
        match zone.upgrade() {
            Some(z) => z.sweep(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> (Arc<Zone>, PathBuf) {
        let dir = std::env::temp_dir().join(format!("ferry-zone-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let conf: CacheZone =
            serde_yaml::from_str(&format!("{{ path: {} }}", dir.display())).unwrap();
        (Zone::open(name, &conf).unwrap(), dir)
    }

    fn store(z: &Zone, key: &Key, body: &[u8]) {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("ETag", format!("\"{}\"", body.len()))
            .unwrap();
        let fresh = Duration::from_secs(60);
        let (mut w, target) = z.writer(key, &HeaderMap::new(), &h, fresh).unwrap();
        w.append(body).unwrap();
        z.stored(&target, w, fresh).unwrap();
    }

    fn open_one(z: &Zone, key: &Key) -> Option<Arc<Entry>> {
        match z.find_open(key, &HeaderMap::new())? {
            Found::Entry(e, _) => Some(e),
            Found::Missing => None,
        }
    }

    fn found(z: &Zone, key: &Key) -> Arc<Entry> {
        match z.find(key, &HeaderMap::new()) {
            Found::Entry(e, _) => e,
            Found::Missing => panic!("stored"),
        }
    }

    /// An entry read once is found again without the disk while its file
    /// is the same; written, replaced, refreshed or removed, it is not. A
    /// large one (its body not read with its head) is kept too, its body
    /// read from the file it keeps.
    #[test]
    fn entries_kept_open_are_taken_only_while_their_file_is_unchanged() {
        let (z, dir) = zone("open");
        let key = Key::new("k".into());
        assert!(open_one(&z, &key).is_none(), "nothing read yet");
        store(&z, &key, b"first");
        let e = found(&z, &key);
        let again = open_one(&z, &key).expect("kept open");
        assert!(Arc::ptr_eq(&e, &again));

        // Written in place (the same length): read again from the disk.
        let path = key::path_of(&z.dir, &key.hash);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 5;
        bytes[at..].copy_from_slice(b"FIRST");
        std::fs::write(&path, &bytes).unwrap();
        // Its time as well, whatever the file system's clock tick.
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        assert!(open_one(&z, &key).is_none(), "changed on disk");
        assert_eq!(&found(&z, &key).read_body(0, 10).unwrap()[..], b"FIRST");

        // Replaced by a new fill: its old file is not taken.
        assert!(open_one(&z, &key).is_some());
        store(&z, &key, b"second!");
        assert!(open_one(&z, &key).is_none(), "replaced");
        assert_eq!(found(&z, &key).head.body_len, 7);

        // Refreshed (revalidated), then removed behind the zone's back.
        assert!(open_one(&z, &key).is_some());
        z.refresh(&path, Duration::from_secs(60)).unwrap();
        assert!(open_one(&z, &key).is_none(), "refreshed");
        let _ = found(&z, &key);
        std::fs::remove_file(&path).unwrap();
        assert!(open_one(&z, &key).is_none(), "removed");
        assert!(matches!(z.find(&key, &HeaderMap::new()), Found::Missing));

        let large = Key::new("large".into());
        store(&z, &large, &vec![b'x'; 64 * 1024]);
        assert_eq!(found(&z, &large).head.body_len, 64 * 1024);
        let kept = open_one(&z, &large).expect("kept open");
        assert_eq!(kept.head.body_len, 64 * 1024);
        assert!(
            kept.body_read(0, 64 * 1024).is_none(),
            "not read with its head"
        );
        assert_eq!(&kept.read_body(60 * 1024, 8).unwrap()[..], b"xxxxxxxx");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
