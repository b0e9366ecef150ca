//! One header line of a parsed head, as byte ranges into the caller's
//! buffer, and the lookups by name that framing and keepalive need. nginx's
//! counterpart is `ngx_table_elt_t` with its `key` and `value`.

use std::ops::Range;

/// A header line: `name` and `value` are ranges into the parsed buffer; the
/// value is without its surrounding whitespace (as httparse returns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// Where `part` (a sub-slice of `buf`) sits in `buf`.
pub(crate) fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
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

/// The values of every line named `name` (ASCII case-insensitive), in order.
pub(crate) fn values<'b, 'l>(
    lines: &'l [Line],
    buf: &'b [u8],
    name: &'l str,
) -> impl DoubleEndedIterator<Item = &'b [u8]> + 'l
where
    'b: 'l,
{
    lines.iter().filter_map(move |l| {
        let n = buf.get(l.name.clone())?;
        if n.eq_ignore_ascii_case(name.as_bytes()) {
            buf.get(l.value.clone())
        } else {
            None
        }
    })
}

/// The first value of `name`.
pub(crate) fn first<'b>(lines: &[Line], buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
    values(lines, buf, name).next()
}

/// Whether any line is named `name`.
pub(crate) fn has(lines: &[Line], buf: &[u8], name: &str) -> bool {
    first(lines, buf, name).is_some()
}
