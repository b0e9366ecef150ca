//! One header line of a parsed head, as byte ranges into the caller's
//! buffer, and the lookups by name that framing and keepalive need. nginx's
//! counterpart is `ngx_table_elt_t` with its `key` and `value`.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;

/// A header line: `name` and `value` are ranges into the parsed buffer; the
/// value is without its surrounding whitespace (as httparse returns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The field name, as received.
    pub name: Range<usize>,
    /// The field value without surrounding spaces and tabs.
    pub value: Range<usize>,
}

/// Where `part` (a sub-slice of `buf`) sits in `buf`; `0..0` for an empty
/// part that httparse did not take from `buf`.
pub(crate) fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= buf.len() => start..end,
        _ => 0..0,
    }
}

/// httparse's header lines as `Line`s.
pub(crate) fn lines_of(buf: &[u8], headers: &[httparse::Header<'_>]) -> Vec<Line> {
    headers
        .iter()
        .map(|h| Line {
            name: range_in(buf, h.name.as_bytes()),
            value: range_in(buf, h.value),
        })
        .collect()
}

/// The values of every line named `name` (ASCII case-insensitive), in
/// order, unfolded (see `unfold`) as Pingora sees them.
pub(crate) fn values<'b, 'l>(
    lines: &'l [Line],
    buf: &'b [u8],
    name: &'l str,
) -> impl DoubleEndedIterator<Item = Cow<'b, [u8]>> + 'l
where
    'b: 'l,
{
    raw_values(lines, buf, name).map(unfold)
}

pub(crate) fn raw_values<'b, 'l>(
    lines: &'l [Line],
    buf: &'b [u8],
    name: &'l str,
) -> impl DoubleEndedIterator<Item = &'b [u8]> + 'l
where
    'b: 'l,
{
    lines.iter().filter_map(move |l| {
        // Most lines are told apart by their length alone.
        if l.name.len() != name.len() {
            return None;
        }
        let n = buf.get(l.name.clone())?;
        if crate::same_name(n, name.as_bytes()) {
            buf.get(l.value.clone())
        } else {
            None
        }
    })
}

/// The first value of `name`, raw.
pub(crate) fn first<'b>(lines: &[Line], buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
    raw_values(lines, buf, name).next()
}

/// A field value as Pingora keeps a response's: each obs-fold (CRLF and the
/// spaces and tabs around it) collapsed to one space, any other CR or NUL
/// replaced by a space (pingora-http `normalize_field_value`, RFC 9112
/// section 5.2). Borrowed unless the value holds CR, LF or NUL, which only
/// a folded response value can. A caller forwarding a response's header
/// lines forwards this form.
pub fn unfold(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.iter().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        return Cow::Borrowed(raw);
    }
    let blank = |b: &u8| if matches!(b, b'\r' | b'\0') { b' ' } else { *b };
    let Some(first_nl) = raw.iter().position(|&b| b == b'\n') else {
        return Cow::Owned(raw.iter().map(blank).collect());
    };
    let mut out: Vec<u8> = raw[..first_nl].trim_ascii_end().iter().map(blank).collect();
    for part in raw[first_nl + 1..].split(|&b| b == b'\n') {
        let part = part.trim_ascii();
        if part.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend(part.iter().map(blank));
    }
    Cow::Owned(out)
}

/// Header lines parsed without allocating when the limit is at most this.
const STACK_SLOTS: usize = 256;

/// `parse` given room for `max` header lines: on the stack up to
/// [`STACK_SLOTS`], else on the heap.
pub(crate) fn with_slots<'b, T>(
    max: usize,
    parse: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> T,
) -> T {
    if max <= STACK_SLOTS {
        let mut slots = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; STACK_SLOTS];
        parse(&mut slots[..max])
    } else {
        parse(&mut vec![
            MaybeUninit::<httparse::Header<'b>>::uninit();
            max
        ])
    }
}

/// Whether any line is named `name`.
pub(crate) fn has(lines: &[Line], buf: &[u8], name: &str) -> bool {
    first(lines, buf, name).is_some()
}
