//! Anonymous temp files for spilled bodies: created in `temp_path` and never
//! linked (Linux `O_TMPFILE`; elsewhere created and unlinked at once), so
//! nothing is left behind after completion, an abort or a crash.
//!
//! nginx counterpart: `ngx_create_temp_file` + `ngx_delete_file` with
//! `clean`/`persistent` off. Writes and reads are positional (`pwrite`/
//! `pread`) on page cache, as nginx does without aio.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// An append-only file with no name.
#[derive(Debug)]
pub struct TempFile {
    file: File,
    len: u64,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    /// Create in `dir`, making the directory (mode 0700) when missing.
    pub fn create_in(dir: &Path) -> io::Result<TempFile> {
        if !dir.is_dir() {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let file = match Self::open_tmpfile(dir) {
            Ok(f) => f,
            Err(_) => Self::open_and_unlink(dir)?,
        };
        Ok(TempFile { file, len: 0 })
    }

    #[cfg(target_os = "linux")]
    fn open_tmpfile(dir: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
    }

    #[cfg(not(target_os = "linux"))]
    fn open_tmpfile(_dir: &Path) -> io::Result<File> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    fn open_and_unlink(dir: &Path) -> io::Result<File> {
        let name = dir.join(format!(
            "ferry-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&name)?;
        std::fs::remove_file(&name)?;
        Ok(f)
    }

    /// Bytes written so far (nginx `temp_file->offset`).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `data` at the end.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Read up to `max` bytes at `offset` (fewer only at the end of the file).
    pub fn read_at(&self, offset: u64, max: usize) -> io::Result<bytes::Bytes> {
        let n = max.min(self.len.saturating_sub(offset) as usize);
        let mut buf = vec![0u8; n];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_no_name_behind_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("ferry-tf-{}", std::process::id()));
        let mut f = TempFile::create_in(&dir).unwrap();
        f.append(b"hello ").unwrap();
        f.append(b"world").unwrap();
        assert_eq!(f.len(), 11);
        assert_eq!(&f.read_at(0, 5).unwrap()[..], b"hello");
        assert_eq!(&f.read_at(6, 100).unwrap()[..], b"world");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }
}
