//! A cache key: the route's rendered `key` template, its 128-bit hash
//! (pingora-cache's blake2b), and where the entry's file lives.
//!
//! nginx counterpart: `ngx_http_file_cache_create_key` (an MD5 of the
//! key) and `levels=1:2`: `PATH/c/29/b7f54b2df7773722d382f4809d65029c`.

use http::HeaderMap;
use std::path::{Path, PathBuf};

/// The hash entries are filed and indexed by.
pub type Hash = [u8; 16];

/// A request's header values by name, as a variant key is made of them.
pub trait Values {
    /// Every value of the field `name` (lower case), in order.
    fn values(&self, name: &str) -> Vec<&[u8]>;
}

impl Values for HeaderMap {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.get_all(name).iter().map(|v| v.as_bytes()).collect()
    }
}

/// One key, as the request rendered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The rendered key (a variant's: the key and its `Vary` values).
    pub text: String,
    /// `pingora_cache::key::hash_key(text)`.
    pub hash: Hash,
    /// The key without a variant: what a purge names.
    pub primary: Hash,
}

impl Key {
    /// The key of `text`.
    pub fn new(text: String) -> Key {
        let hash = pingora_cache::key::hash_key(&text);
        Key {
            text,
            hash,
            primary: hash,
        }
    }

    /// The variant of this key that a request with `headers` selects,
    /// given the names a stored response's `Vary` listed (nginx
    /// `ngx_http_file_cache_vary`: the values of those request headers).
    pub fn variant<V: Values + ?Sized>(&self, names: &[String], headers: &V) -> Key {
        let mut text = self.text.clone();
        for name in names {
            text.push('\n');
            text.push_str(name);
            text.push(':');
            for (i, v) in headers.values(name).into_iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&String::from_utf8_lossy(v));
            }
        }
        Key {
            hash: pingora_cache::key::hash_key(&text),
            text,
            primary: self.primary,
        }
    }

    /// The hash in hex: the file's name.
    pub fn hex(&self) -> String {
        hex(&self.hash)
    }
}

/// 32 lower-case hex digits.
pub fn hex(hash: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in hash {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// The hash a file name spells, if it is one.
pub fn from_hex(name: &str) -> Option<Hash> {
    if name.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in name.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// `dir/L1/L2/HEX`, nginx's `levels=1:2`: the last hex digit, then the
/// two before it.
pub fn path_of(dir: &Path, hash: &Hash) -> PathBuf {
    let h = hex(hash);
    let mut path = PathBuf::with_capacity(dir.as_os_str().len() + 40);
    path.push(dir);
    path.push(&h[31..]);
    path.push(&h[29..31]);
    path.push(h);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_laid_out_as_nginx_levels() {
        let k = Key::new("httpapp/a?x=1".into());
        let p = path_of(Path::new("/c"), &k.hash);
        let h = k.hex();
        assert_eq!(
            p,
            PathBuf::from(format!("/c/{}/{}/{h}", &h[31..], &h[29..31]))
        );
        assert_eq!(from_hex(&h), Some(k.hash));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn variants_differ_by_the_named_headers_only() {
        let k = Key::new("k".into());
        let mut a = HeaderMap::new();
        a.insert("accept-encoding", "gzip".parse().unwrap());
        a.insert("user-agent", "one".parse().unwrap());
        let mut b = a.clone();
        b.insert("user-agent", "two".parse().unwrap());
        let names = vec!["accept-encoding".to_string()];
        assert_eq!(k.variant(&names, &a).hash, k.variant(&names, &b).hash);
        b.insert("accept-encoding", "br".parse().unwrap());
        assert_ne!(k.variant(&names, &a).hash, k.variant(&names, &b).hash);
        assert_eq!(k.variant(&names, &a).primary, k.hash);
    }
}
