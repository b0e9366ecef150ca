//! The client's request body, read whole before the first try and replayed on
//! every try: in memory up to `client_body_buffer_size`, the rest in an
//! unlinked temp file. No 64 KiB ceiling.
//!
//! nginx counterpart: `ngx_http_read_client_request_body` with
//! `proxy_request_buffering on` and `ngx_http_upstream_reinit` rewinding it.

use crate::temp_file::TempFile;
use bytes::{Bytes, BytesMut};
use std::io;
use std::path::Path;

/// How much of the body a replay hands out at once from the file.
const REPLAY_CHUNK: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct RequestBody {
    memory: BytesMut,
    file: Option<TempFile>,
    len: u64,
}

impl RequestBody {
    pub fn new() -> RequestBody {
        RequestBody::default()
    }

    /// Total bytes held.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether part of the body went to a temp file.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Add a chunk: memory while it fits in `memory_limit`, then the file.
    pub fn push(&mut self, chunk: &[u8], memory_limit: usize, temp_path: &Path) -> io::Result<()> {
        self.len += chunk.len() as u64;
        if self.file.is_none() && self.memory.len() + chunk.len() <= memory_limit {
            self.memory.extend_from_slice(chunk);
            return Ok(());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(TempFile::create_in(temp_path)?),
        };
        file.append(chunk)
    }

    /// The body as a list of pieces for one try: memory first, then the file.
    pub fn replay(&self) -> Replay<'_> {
        Replay {
            body: self,
            memory_done: self.memory.is_empty(),
            file_offset: 0,
        }
    }
}

/// One pass over a [`RequestBody`].
pub struct Replay<'a> {
    body: &'a RequestBody,
    memory_done: bool,
    file_offset: u64,
}

impl Replay<'_> {
    /// The next piece, or `None` at the end.
    pub fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.memory_done {
            self.memory_done = true;
            return Ok(Some(Bytes::copy_from_slice(&self.body.memory)));
        }
        let Some(file) = &self.body.file else {
            return Ok(None);
        };
        if self.file_offset >= file.len() {
            return Ok(None);
        }
        let chunk = file.read_at(self.file_offset, REPLAY_CHUNK)?;
        self.file_offset += chunk.len() as u64;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_then_file_replays_in_order_every_time() {
        let dir = std::env::temp_dir().join(format!("ferry-rb-{}", std::process::id()));
        let mut b = RequestBody::new();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(7000) {
            b.push(c, 16 * 1024, &dir).unwrap();
        }
        assert!(b.spilled());
        assert_eq!(b.len(), 200_000);
        for _ in 0..2 {
            let mut r = b.replay();
            let mut out = Vec::new();
            while let Some(c) = r.next_chunk().unwrap() {
                out.extend_from_slice(&c);
            }
            assert_eq!(out, data);
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "file is unlinked"
        );
        let _ = std::fs::remove_dir(&dir);
    }
}
