//! Wire bytes as text: a field, a target or a method is ASCII nearly
//! always, and ASCII is checked a word at a time, where a general UTF-8
//! validation costs a call and its set-up for a few bytes.

/// `bytes` as text when they are ASCII; `None` otherwise (the caller then
/// takes its UTF-8 path).
fn ascii_text(bytes: &[u8]) -> Option<&str> {
    if !bytes.is_ascii() {
        return None;
    }
    // SAFETY: ASCII is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// `bytes` as text: ASCII at once, else validated as UTF-8.
pub fn text(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    match ascii_text(bytes) {
        Some(t) => Ok(t),
        None => std::str::from_utf8(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_is_text_at_once_and_the_rest_as_utf8_says() {
        for b in [
            &b""[..],
            b"/a?b=c",
            b"GET",
            b"caf\xc3\xa9",
            b"\xff",
            b"a\x00b",
            b"\x7f",
        ] {
            assert_eq!(text(b).ok(), std::str::from_utf8(b).ok(), "{b:?}");
            assert_eq!(ascii_text(b).is_some(), b.is_ascii(), "{b:?}");
        }
    }
}
