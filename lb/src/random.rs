//! random: nginx's `random two`: draw two distinct servers, weighted, and
//! take the one with fewer requests in progress per weight (on a tie, the
//! second draw).
//!
//! nginx counterpart: `ngx_http_upstream_get_random2_peer`, with
//! `ngx_http_upstream_peek_random_peer` (a weighted draw over cumulative
//! ranges). After 20 unusable draws nginx falls back to round robin.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    (t ^ (&local as *const u8 as u64).rotate_left(32)) | 1
}

/// xorshift64*: a fast per-thread generator (a balancer needs no more).
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A weighted draw: the index into `weights` whose cumulative range holds a
/// random point below the total.
pub fn draw(weights: &[u32]) -> usize {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return 0;
    }
    let mut x = next_u64() % total;
    for (i, &w) in weights.iter().enumerate() {
        if x < u64::from(w) {
            return i;
        }
        x -= u64::from(w);
    }
    weights.len() - 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_follow_weights() {
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[super::draw(&[3, 1])] += 1;
        }
        let share = f64::from(counts[0]) / 40_000.0;
        assert!(
            (0.72..0.78).contains(&share),
            "share of weight 3 of 4: {share}"
        );
    }
}
