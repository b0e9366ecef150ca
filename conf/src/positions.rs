//! Where each key and value sits in the YAML text, by path
//! (`routes.0.upstream`), so checks made after parsing can still say
//! `FILE:LINE:COLUMN`.
//!
//! serde_yaml reports positions only while it deserializes; cross-checks (an
//! unknown upstream name, a duplicate listen address) come later, so the
//! loader indexes the text once with yaml-rust2's marked events.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// The deepest nesting of mappings and sequences a file may have.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Default)]
pub struct Positions {
    /// path -> (key position, value position)
    map: HashMap<String, (Pos, Pos)>,
    /// Keys written a second time in one mapping: the key and where the
    /// second one is.
    duplicates: Vec<(String, Pos)>,
    /// Where the nesting first went past [`MAX_DEPTH`] (indexing stopped
    /// there).
    too_deep: Option<Pos>,
}

impl Positions {
    /// Index a document; a text yaml-rust2 cannot parse gives what was
    /// indexed before the error (serde_yaml then reports the syntax error
    /// itself).
    pub fn index(text: &str) -> Positions {
        let mut rx = Receiver::default();
        let mut parser = Parser::new_from_str(text);
        let mut too_deep = None;
        loop {
            let (ev, mark) = match parser.next_token() {
                Ok(t) => t,
                // yaml-rust2 has a nesting limit of its own: past it, stop
                // here rather than let serde_yaml take seconds to fail.
                Err(e) if e.info().contains("recursion limit") => {
                    let m = e.marker();
                    too_deep = Some(Pos {
                        line: m.line(),
                        column: m.col() + 1,
                    });
                    break;
                }
                Err(_) => break,
            };
            let end = matches!(ev, Event::DocumentEnd | Event::StreamEnd);
            rx.on_event(ev, mark);
            if rx.stack.len() > MAX_DEPTH {
                too_deep = Some(Pos {
                    line: mark.line(),
                    column: mark.col() + 1,
                });
                break;
            }
            if end {
                break;
            }
        }
        Positions {
            map: rx.map,
            duplicates: rx.duplicates,
            too_deep,
        }
    }

    /// Keys written twice in one mapping, with the second one's position.
    pub fn duplicates(&self) -> &[(String, Pos)] {
        &self.duplicates
    }

    /// Where the nesting went past [`MAX_DEPTH`], if it did.
    pub fn too_deep(&self) -> Option<Pos> {
        self.too_deep
    }

    /// The position of the value at `path`, or of the nearest ancestor.
    pub fn value(&self, path: &str) -> Pos {
        self.find(path, |(_, v)| v)
    }

    /// The position of the key at `path`, or of the nearest ancestor.
    pub fn key(&self, path: &str) -> Pos {
        self.find(path, |(k, _)| k)
    }

    /// Exact path: the picked position; else the nearest ancestor's key.
    fn find(&self, path: &str, pick: fn(&(Pos, Pos)) -> &Pos) -> Pos {
        if let Some(e) = self.map.get(path) {
            return *pick(e);
        }
        let mut p = path;
        loop {
            if let Some((k, _)) = self.map.get(p) {
                return *k;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .map
                        .get("")
                        .map(|(k, _)| *k)
                        .unwrap_or(Pos { line: 1, column: 1 })
                }
            }
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<(String, Pos)>,
        /// The keys this mapping has had so far (a duplicate is a key
        /// written twice in one mapping, not a path seen before).
        seen: Vec<String>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Receiver {
    stack: Vec<Frame>,
    map: HashMap<String, (Pos, Pos)>,
    duplicates: Vec<(String, Pos)>,
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

impl Receiver {
    /// A node starts at `pos`: name it, record it, and return its path (None
    /// when the node is a mapping key).
    fn node(&mut self, pos: Pos, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => {
                self.map.insert(String::new(), (pos, pos));
                Some(String::new())
            }
            Some(Frame::Map {
                path,
                key: key @ None,
                ..
            }) => {
                *key = Some((scalar.unwrap_or("?").to_string(), pos));
                // yaml-rust2 marks a block mapping at its first `:`; the
                // mapping really starts at its first key.
                if let Some(entry) = self.map.get_mut(path.as_str()) {
                    for p in [&mut entry.0, &mut entry.1] {
                        if (pos.line, pos.column) < (p.line, p.column) {
                            *p = pos;
                        }
                    }
                }
                None
            }
            Some(Frame::Map { path, key, seen }) => {
                let (k, kpos) = key
                    .take()
                    .unwrap_or_else(|| ("?".to_string(), Pos { line: 1, column: 1 }));
                let p = join(path, &k);
                if k != "?" && seen.contains(&k) {
                    self.duplicates.push((k, kpos));
                } else {
                    seen.push(k);
                }
                self.map.insert(p.clone(), (kpos, pos));
                Some(p)
            }
            Some(Frame::Seq { path, index }) => {
                let p = join(path, &index.to_string());
                *index += 1;
                self.map.insert(p.clone(), (pos, pos));
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match ev {
            Event::Scalar(ref v, ..) => {
                self.node(pos, Some(v));
            }
            Event::Alias(_) => {
                self.node(pos, Some("*"));
            }
            Event::MappingStart(..) => {
                // A mapping used as a key gets a placeholder path.
                let path = self.node(pos, None).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    seen: Vec::new(),
                });
            }
            Event::SequenceStart(..) => {
                let path = self.node(pos, None).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_and_values_one_based() {
        let text = "a:\n  b: 1\nlist:\n  - x: 2\n  - y\n";
        let p = Positions::index(text);
        assert_eq!(p.key("a.b"), Pos { line: 2, column: 3 });
        assert_eq!(p.value("a.b"), Pos { line: 2, column: 6 });
        assert_eq!(p.value("list.0.x"), Pos { line: 4, column: 8 });
        assert_eq!(p.value("list.1"), Pos { line: 5, column: 5 });
        // unknown paths fall back to the nearest ancestor's key
        assert_eq!(p.value("a.nope"), Pos { line: 1, column: 1 });
        assert_eq!(p.value("list.1.nope"), Pos { line: 5, column: 5 });
    }
}
