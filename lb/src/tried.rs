//! The peers one request tried: a bit each, by the peer's index in its
//! group's members (nginx's `rrp->tried`, a bitmap of one word inline and
//! more only for a group over 64 servers).

/// A set of peer indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tried {
    first: u64,
    /// Bits 64 and up, grown only when one of them is set.
    rest: Vec<u64>,
}

impl Tried {
    /// Whether peer `i` was tried.
    pub(crate) fn has(&self, i: usize) -> bool {
        let word = match i / 64 {
            0 => self.first,
            w => self.rest.get(w - 1).copied().unwrap_or(0),
        };
        word & (1 << (i % 64)) != 0
    }

    /// Mark peer `i` tried.
    pub(crate) fn set(&mut self, i: usize) {
        let bit = 1 << (i % 64);
        match i / 64 {
            0 => self.first |= bit,
            w => {
                if self.rest.len() < w {
                    self.rest.resize(w, 0);
                }
                self.rest[w - 1] |= bit;
            }
        }
    }

    /// Forget every peer (the request moved on to the backups).
    pub(crate) fn clear(&mut self) {
        self.first = 0;
        self.rest.iter_mut().for_each(|w| *w = 0);
    }

    /// The indexes set, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.first)
            .chain(self.rest.iter().copied())
            .enumerate()
            .flat_map(|(w, word)| {
                (0..64)
                    .filter(move |b| word & (1 << b) != 0)
                    .map(move |b| w * 64 + b)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Tried;

    #[test]
    fn a_set_holds_exactly_its_indexes_on_either_side_of_a_word() {
        let mut t = Tried::default();
        let set = [0, 5, 63, 64, 130, 200];
        for &i in &set {
            t.set(i);
        }
        for i in 0..260 {
            assert_eq!(t.has(i), set.contains(&i), "index {i}");
        }
        assert_eq!(t.iter().collect::<Vec<_>>(), set);
        t.clear();
        assert_eq!(t.iter().count(), 0);
        assert!(!t.has(64) && !t.has(0));
    }
}
