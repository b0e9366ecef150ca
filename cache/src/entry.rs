//! One entry's file: a fixed head, the key, the response header, the body.
//!
//! ```text
//! 0   "FERRYC2\n"        magic and format version
//! 8   body length        u64 LE; all ones while the file is being written
//! 16  date               i64 LE, Unix seconds: when the response was stored
//! 24  expires            i64 LE, Unix seconds: fresh until then
//! 32  kind               u32 LE: 0 a response, 1 the `Vary` names of a key
//! 36  key length         u32 LE
//! 40  header length      u32 LE
//! 44  key, then the response header (HTTP/1.1 text), then the body
//! ```
//!
//! A file is written under the cache's `tmp/` directory as the body
//! streams and renamed into place only when the response completed
//! cleanly, so a reader never sees half an entry; a file that does not
//! parse, or whose length is not its head's, is corrupt and never served.
//!
//! nginx counterpart: `ngx_http_file_cache_header_t` and the key and
//! header that follow it; `ngx_http_file_cache_update` (the rename);
//! `ngx_http_file_cache_update_header` ([`refresh`]).

use pingora_http::ResponseHeader;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"FERRYC2\n";
const HEAD: usize = 44;
const WRITING: u64 = u64::MAX;
/// What the first read of an entry takes.
const FIRST_READ: usize = 8192;
/// No key or header this long is ours.
const MOST: u32 = 1 << 20;

/// Most header lines a stored response may have.
const MOST_LINES: usize = 512;
/// Header lines parsed without an allocation.
const FEW_LINES: usize = 48;

/// The header as HTTP/1.1 text (its names' case kept). Plain text rather
/// than pingora-header-serde's zstd: decompressing was a tenth of a HIT's
/// CPU, and the bytes are a few hundred per entry.
fn header_text(header: &ResponseHeader) -> Vec<u8> {
    let mut buf = format!("HTTP/1.1 {} X\r\n", header.status.as_u16()).into_bytes();
    header.header_to_h1_wire(&mut buf);
    buf.extend_from_slice(b"\r\n");
    buf
}

/// The header back from its text, by httparse: each name and value a
/// slice of `text` (no copy; httparse checked their bytes), in the form a
/// HIT serves it (see [`Head::header`]): the first `Content-Length` says
/// `body_len` (one is added last when there was none), the others and any
/// `Transfer-Encoding` are left out: the stored body is whole and
/// unchunked.
fn parse_header(text: &bytes::Bytes, body_len: u64) -> Option<ResponseHeader> {
    // Room for a usual header on the stack; a long one is parsed again
    // with room for the most a stored header may have.
    let mut few = [httparse::EMPTY_HEADER; FEW_LINES];
    let mut many;
    let mut parsed = httparse::Response::new(&mut few);
    match parsed.parse(text) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            many = vec![httparse::EMPTY_HEADER; MOST_LINES];
            parsed = httparse::Response::new(&mut many);
            if !parsed.parse(text).ok()?.is_complete() {
                return None;
            }
        }
        _ => return None,
    }
    let mut header = ResponseHeader::build(parsed.code?, Some(parsed.headers.len() + 1)).ok()?;
    let length = || http::HeaderValue::from(body_len);
    let mut has_length = false;
    for h in parsed.headers.iter() {
        let name = text.slice_ref(h.name.as_bytes());
        let value = if h.name.eq_ignore_ascii_case("content-length") {
            if std::mem::replace(&mut has_length, true) {
                continue;
            }
            length()
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        } else {
            pingora_http::header_value_from_raw(text.slice_ref(h.value))
        };
        header.append_header(name, value).ok()?;
    }
    if !has_length {
        header
            .append_header(http::header::CONTENT_LENGTH, length())
            .ok()?;
    }
    Some(header)
}

fn corrupt(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// What a file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A response.
    Response,
    /// The key's responses vary by these request headers: each variant
    /// is its own file.
    Vary(Vec<String>),
}

/// A file's head, read without its body.
#[derive(Debug)]
pub struct Head {
    pub kind: Kind,
    /// The key text the file was stored under.
    pub key: String,
    /// When it was stored (Unix seconds).
    pub date: i64,
    /// Fresh until (Unix seconds).
    pub expires: i64,
    /// The stored response header as a HIT serves it: `Content-Length`
    /// the body's length, no `Transfer-Encoding`.
    pub header: ResponseHeader,
    pub body_len: u64,
    /// Where the body starts in the file.
    pub body_at: u64,
}

/// An entry found on disk: its head and the open file.
#[derive(Debug)]
pub struct Entry {
    pub head: Head,
    pub file: File,
    pub path: PathBuf,
    /// The body's first bytes, read with the head.
    prefix: bytes::Bytes,
    /// The file as it was when read: see [`Entry::unchanged`].
    stamp: Stamp,
    /// The header as the server last served it.
    pub served: Served,
}

/// The stored header as the server made it for one route and one kind of
/// client (`key`, the server's to choose), kept with the entry so that
/// the next HIT alike starts from it. The cache itself never reads it.
#[derive(Debug, Default)]
pub struct Served(std::sync::Mutex<Option<(u64, Arc<ResponseHeader>)>>);

impl Served {
    /// The header made for `key`, if it is the one kept (shared: a copy is
    /// made only by whoever changes it).
    pub fn get(&self, key: u64) -> Option<Arc<ResponseHeader>> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, h)| h.clone())
    }

    /// Keep `header`, made for `key`, in place of the one kept.
    pub fn keep(&self, key: u64, header: Arc<ResponseHeader>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, header));
    }
}

/// What tells a file apart from itself changed: its length, its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl Entry {
    /// Up to `max` body bytes from `offset` (into the body), when they were
    /// read with the head; `None` when they must come from the disk.
    pub fn body_read(&self, offset: u64, max: usize) -> Option<bytes::Bytes> {
        let n = self.piece_len(offset, max);
        (offset + (n as u64) <= self.prefix.len() as u64)
            .then(|| self.prefix.slice(offset as usize..offset as usize + n))
    }

    /// Up to `max` body bytes from `offset` (into the body), from the disk
    /// when they were not read with the head.
    pub fn read_body(&self, offset: u64, max: usize) -> io::Result<bytes::Bytes> {
        if let Some(piece) = self.body_read(offset, max) {
            return Ok(piece);
        }
        let n = self.piece_len(offset, max);
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n {
            let r = self
                .file
                .read_at(&mut buf[done..], self.head.body_at + offset + done as u64)?;
            if r == 0 {
                return Err(corrupt("entry shorter than its head says"));
            }
            done += r;
        }
        Ok(bytes::Bytes::from(buf))
    }

    fn piece_len(&self, offset: u64, max: usize) -> usize {
        let left = self.head.body_len.saturating_sub(offset);
        (max as u64).min(left) as usize
    }

    /// The file's size on disk.
    pub fn size(&self) -> u64 {
        self.head.body_at + self.head.body_len
    }

    /// Whether the open file is still the entry that was read: still at
    /// its path (not removed, nor replaced by a rename) and not written
    /// since. One `fstat` of the open file, which never waits on the disk
    /// (nginx's `open_file_cache` checks the same way, by `stat`).
    pub fn unchanged(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match self.file.metadata() {
            Ok(meta) => meta.nlink() > 0 && Stamp::of(&meta) == self.stamp,
            Err(_) => false,
        }
    }
}

/// Open and check the file at `path`: `Ok(None)` when there is none,
/// `Err(InvalidData)` when it was read and is not a whole entry (only
/// then may it be removed). Any other error (no file descriptor left, a
/// failed read, something that is not a regular file at the path) says
/// nothing of the entry. The open neither blocks (a FIFO planted at the
/// path) nor follows a symbolic link.
pub fn open(path: &Path) -> io::Result<Option<Entry>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let len = meta.len();
    let stamp = Stamp::of(&meta);
    // One read brings the head, the key, the header and, for a small
    // entry, the whole body.
    let mut first = vec![0u8; (len as usize).min(FIRST_READ)];
    read_full(&file, &mut first, 0)?;
    if first.len() < HEAD {
        return Err(corrupt("shorter than a head"));
    }
    let fixed = &first[..HEAD];
    if &fixed[..8] != MAGIC {
        return Err(corrupt("not a Ferry cache file"));
    }
    let u64_at = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().unwrap_or_default());
    let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().unwrap_or_default());
    let body_len = u64_at(8);
    let (date, expires) = (u64_at(16) as i64, u64_at(24) as i64);
    let (kind, key_len, header_len) = (u32_at(32), u32_at(36), u32_at(40));
    if body_len == WRITING || key_len > MOST || header_len > MOST {
        return Err(corrupt("incomplete head"));
    }
    let body_at = (HEAD as u64) + u64::from(key_len) + u64::from(header_len);
    if body_at.checked_add(body_len) != Some(len) {
        return Err(corrupt("length differs from its head"));
    }
    let (rest, prefix) = if body_at as usize <= first.len() {
        let first = bytes::Bytes::from(first);
        (
            first.slice(HEAD..body_at as usize),
            first.slice(body_at as usize..),
        )
    } else {
        let mut rest = vec![0u8; (key_len + header_len) as usize];
        read_full(&file, &mut rest, HEAD as u64)?;
        (bytes::Bytes::from(rest), bytes::Bytes::new())
    };
    let key = String::from_utf8(rest[..key_len as usize].to_vec())
        .map_err(|_| corrupt("key is not text"))?;
    let header = parse_header(&rest.slice(key_len as usize..), body_len)
        .ok_or_else(|| corrupt("header does not parse"))?;
    let kind = match kind {
        0 => Kind::Response,
        1 => Kind::Vary(vary_names(&header)),
        _ => return Err(corrupt("unknown kind")),
    };
    let head = Head {
        kind,
        key,
        date,
        expires,
        header,
        body_len,
        body_at,
    };
    Ok(Some(Entry {
        head,
        file,
        path: path.to_path_buf(),
        prefix,
        stamp,
        served: Served::default(),
    }))
}

/// Fill `buf` from `at`, or fail: the file is shorter than it said.
fn read_full(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    file.read_exact_at(buf, at).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => corrupt("shorter than its length"),
        _ => e,
    })
}

/// The request header names a response's `Vary` lists, lower-cased.
pub fn vary_names(header: &ResponseHeader) -> Vec<String> {
    let mut names: Vec<String> = header
        .headers
        .get_all(http::header::VARY)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Set an entry's date and expiry in place (a revalidated entry).
pub fn refresh(path: &Path, date: i64, expires: i64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let mut fixed = [0u8; 16];
    fixed[..8].copy_from_slice(&date.to_le_bytes());
    fixed[8..].copy_from_slice(&expires.to_le_bytes());
    file.write_all_at(&fixed, 16)
}

/// A file being written. Dropped before [`Writer::commit`], it removes
/// itself: nothing half-written stays on disk.
#[derive(Debug)]
pub struct Writer {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    body_at: u64,
    written: u64,
    done: bool,
}

impl Writer {
    /// Start the file for `key` in `tmp_dir`, to become `dest`.
    pub fn create(
        tmp_dir: &Path,
        dest: PathBuf,
        kind: &Kind,
        key: &str,
        header: &ResponseHeader,
        date: i64,
        expires: i64,
    ) -> io::Result<Writer> {
        let header = header_text(header);
        let mut tmp = tmp_dir.join(format!(
            "{}.{}",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
            unique()
        ));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .or_else(|_| {
                tmp.set_extension(unique().to_string());
                OpenOptions::new().write(true).create_new(true).open(&tmp)
            })?;
        let mut fixed = [0u8; HEAD];
        fixed[..8].copy_from_slice(MAGIC);
        fixed[8..16].copy_from_slice(&WRITING.to_le_bytes());
        fixed[16..24].copy_from_slice(&date.to_le_bytes());
        fixed[24..32].copy_from_slice(&expires.to_le_bytes());
        let kind = u32::from(matches!(kind, Kind::Vary(_)));
        fixed[32..36].copy_from_slice(&kind.to_le_bytes());
        fixed[36..40].copy_from_slice(&(key.len() as u32).to_le_bytes());
        fixed[40..44].copy_from_slice(&(header.len() as u32).to_le_bytes());
        let start = [&fixed[..], key.as_bytes(), &header].concat();
        file.write_all(&start)?;
        Ok(Writer {
            body_at: start.len() as u64,
            file,
            tmp,
            dest,
            written: 0,
            done: false,
        })
    }

    /// Append body bytes.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Body bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Finish the file and move it into place; its size on disk.
    pub fn commit(mut self) -> io::Result<u64> {
        self.file.write_all_at(&self.written.to_le_bytes(), 8)?;
        if let Some(dir) = self.dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::rename(&self.tmp, &self.dest)?;
        self.done = true;
        Ok(self.body_at + self.written)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Whether a file in `tmp/` is one this process is writing.
pub fn written_here(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .and_then(|e| e.parse::<u64>().ok())
        .is_some_and(|n| n >> 32 == u64::from(std::process::id()))
}

/// A number no other writer of this process uses.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    (u64::from(std::process::id()) << 32) | N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferry-entry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn written_entries_read_back_and_broken_ones_do_not() {
        let d = dir("rw");
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("Content-Type", "text/plain").unwrap();
        h.insert_header("ETag", "\"v1\"").unwrap();
        let dest = d.join("a").join("bc").join("entry");
        let mut w = Writer::create(&d, dest.clone(), &Kind::Response, "key", &h, 10, 70).unwrap();
        w.append(b"hello ").unwrap();
        w.append(b"world").unwrap();
        assert!(open(&dest).unwrap().is_none(), "not visible before commit");
        let size = w.commit().unwrap();
        let e = open(&dest).unwrap().unwrap();
        assert_eq!(e.size(), size);
        assert_eq!(e.head.key, "key");
        assert_eq!((e.head.date, e.head.expires), (10, 70));
        assert_eq!(e.head.header.headers["etag"], "\"v1\"");
        assert_eq!(&e.read_body(0, 100).unwrap()[..], b"hello world");
        assert_eq!(&e.read_body(6, 3).unwrap()[..], b"wor");
        refresh(&dest, 20, 99).unwrap();
        let e = open(&dest).unwrap().unwrap();
        assert_eq!((e.head.date, e.head.expires), (20, 99));

        // Truncated, then garbage: both corrupt.
        let f = OpenOptions::new().write(true).open(&dest).unwrap();
        f.set_len(size - 1).unwrap();
        assert_eq!(open(&dest).unwrap_err().kind(), io::ErrorKind::InvalidData);
        std::fs::write(&dest, b"GET / HTTP/1.1\r\n\r\n and more bytes than a head").unwrap();
        assert_eq!(open(&dest).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn header_text_reads_back_short_and_long() {
        for lines in [3, FEW_LINES + 10] {
            let mut h = ResponseHeader::build(200, None).unwrap();
            for i in 0..lines {
                h.append_header(format!("X-Line-{}", i % 5), format!("v{i}"))
                    .unwrap();
            }
            let text = bytes::Bytes::from(header_text(&h));
            let back = parse_header(&text, 7).expect("parses");
            assert_eq!(back.status, 200);
            h.append_header("Content-Length", "7").unwrap();
            assert_eq!(back.headers, h.headers, "{lines} lines");
            assert_eq!(header_text(&back), header_text(&h), "names keep their case");
        }
        let too_many = (0..MOST_LINES + 1).fold(String::from("HTTP/1.1 200 X\r\n"), |t, i| {
            t + &format!("a{i}: b\r\n")
        }) + "\r\n";
        assert!(parse_header(&bytes::Bytes::from(too_many), 0).is_none());
    }

    #[test]
    fn a_header_reads_back_framed_by_its_stored_body() {
        let text = "HTTP/1.1 200 X\r\nA: 1\r\ncontent-length: 99\r\nB: 2\r\n\
                    Transfer-Encoding: chunked\r\nContent-Length: 98\r\nC: 3\r\n\r\n";
        let back = parse_header(&bytes::Bytes::from(text), 5).expect("parses");
        assert_eq!(
            String::from_utf8(header_text(&back)).unwrap(),
            "HTTP/1.1 200 X\r\nA: 1\r\ncontent-length: 5\r\nB: 2\r\nC: 3\r\n\r\n",
            "the first Content-Length in its place, saying the body's length"
        );
        let chunked = "HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\nA: 1\r\n\r\n";
        let back = parse_header(&bytes::Bytes::from(chunked), 0).expect("parses");
        assert_eq!(
            String::from_utf8(header_text(&back)).unwrap(),
            "HTTP/1.1 200 X\r\nA: 1\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn a_dropped_writer_leaves_nothing() {
        let d = dir("drop");
        let h = ResponseHeader::build(200, None).unwrap();
        let mut w = Writer::create(&d, d.join("x"), &Kind::Response, "k", &h, 0, 0).unwrap();
        w.append(b"partial").unwrap();
        assert!(written_here(&w.tmp), "a reload's new cache leaves it alone");
        assert!(
            !written_here(Path::new("/x/entry.5")),
            "another process's (pid 0)"
        );
        drop(w);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }
}
