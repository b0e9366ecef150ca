//! Reading the configuration file for a reload only when it is whole: an
//! editor or a deploy tool that writes the file in place may be caught
//! half-way, and many cut points of a real file still parse (a file cut
//! after its third route is a valid file with three routes).
//!
//! nginx counterpart: none; `nginx -s reload` reads whatever the file holds
//! at that moment. Writing a new file and renaming it into place is the
//! safe way for both (docs/operations.md).
//!
//! The file is read when it was last changed at least [`QUIET`] ago, and
//! kept only when its size, modification and change times (nanoseconds),
//! inode and device are the same before and after the read; otherwise
//! Ferry looks again after [`PAUSE`], for [`MAX_WAIT`] at most, then
//! refuses.

use ferry_conf::{ConfError, ConfErrors, Config};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// A file changed more recently than this may still be being written.
const QUIET: Duration = Duration::from_millis(100);
/// Between two looks at a file that is not quiet yet, or that changed
/// while it was read. Shorter than [`QUIET`]: a writer that goes on within
/// a pause is seen at the next look (file times may lag the clock by a
/// tick of the kernel's).
const PAUSE: Duration = Duration::from_millis(80);
/// The longest Ferry waits for the file to settle.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Load and check `path` (as `ferry_conf::load_file_with`), read once it
/// is stable; a file that does not settle is an error at its first line.
pub(crate) fn load_stable<S: serde::de::DeserializeOwned>(
    path: &Path,
    key: Option<&str>,
) -> Result<(Config, Option<S>), ConfErrors> {
    let name = path.display().to_string();
    let text = read_stable(path).map_err(|message| {
        ConfErrors(vec![ConfError {
            file: name.clone(),
            line: 1,
            column: 1,
            message,
        }])
    })?;
    ferry_conf::load_str_with(&name, &text, key)
}

/// The file's text, read when it is stable; or why it could not be.
pub(crate) fn read_stable(path: &Path) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let before = Stamp::of(path)?;
        if quiet(before.mtime, SystemTime::now()) {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read the file: {e}"))?;
            if Stamp::of(path)? == before && text.len() as u64 == before.size {
                return Ok(text);
            }
            log::info!(
                "{}: changed while it was read; reading it again",
                path.display()
            );
        } else {
            log::info!(
                "{}: changed less than {QUIET:?} ago; waiting for it to settle before reading it",
                path.display()
            );
        }
        if start.elapsed() + PAUSE > MAX_WAIT {
            return Err(format!(
                "the file was still being written after {MAX_WAIT:?}, so it was not read; \
                 write the new file beside it and rename it into place"
            ));
        }
        std::thread::sleep(PAUSE);
    }
}

/// Whether a file last modified at `mtime` has been left alone for
/// [`QUIET`]. A time far in the future says nothing (a clock set wrong):
/// only the before-and-after check then applies.
fn quiet(mtime: SystemTime, now: SystemTime) -> bool {
    match now.duration_since(mtime) {
        Ok(age) => age >= QUIET,
        Err(ahead) => ahead.duration() >= QUIET,
    }
}

/// What changes when a file is written or replaced.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: SystemTime,
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Result<Stamp, String> {
        let m = std::fs::metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
        // A FIFO or a device would block or never end: only regular files.
        if !m.is_file() {
            return Err("not a regular file".to_string());
        }
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: m
                .modified()
                .map_err(|e| format!("cannot read the file: {e}"))?,
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_quiet_a_while_after_its_last_change() {
        let now = SystemTime::now();
        let ms = Duration::from_millis;
        assert!(!quiet(now - ms(30), now));
        assert!(quiet(now - ms(100), now));
        assert!(
            !quiet(now + ms(20), now),
            "a clock a little behind the file's"
        );
        assert!(
            quiet(now + Duration::from_secs(3600), now),
            "a clock set wrong"
        );
    }

    #[test]
    fn a_settled_file_is_read_and_a_missing_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("ferry-stable-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("f.yaml");
        std::fs::write(&file, "listen: [127.0.0.1:1]\n").expect("write");
        assert_eq!(read_stable(&file).as_deref(), Ok("listen: [127.0.0.1:1]\n"));
        assert!(read_stable(&dir.join("nope"))
            .unwrap_err()
            .contains("cannot read"));
        assert_eq!(read_stable(&dir).unwrap_err(), "not a regular file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
