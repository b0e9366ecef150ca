//! Smooth weighted round robin, nginx's default balancer.
//!
//! nginx counterpart: `ngx_http_upstream_get_peer` (round_robin.c). Every
//! eligible peer gains its effective weight; the largest current weight wins
//! (the first in config order on ties) and gives back the total. Weights
//! 5, 1, 1 give `a a b a c a a`. A failed peer's effective weight was lowered
//! and climbs back by one per pass.

use crate::passive_health::PeerState;

/// Pick among `eligible` peer indexes; `weights[i]` is the configured weight.
pub fn pick(states: &mut [PeerState], weights: &[u32], eligible: &[usize]) -> Option<usize> {
    let mut best: Option<(usize, i64)> = None;
    let mut total: i64 = 0;
    for &i in eligible {
        let s = &mut states[i];
        s.current_weight += s.effective_weight;
        total += s.effective_weight;
        if s.effective_weight < i64::from(weights[i]) {
            s.effective_weight += 1;
        }
        if best.is_none_or(|(_, cw)| s.current_weight > cw) {
            best = Some((i, s.current_weight));
        }
    }
    let (b, _) = best?;
    states[b].current_weight -= total;
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(weights: &[u32], n: usize) -> String {
        let mut st: Vec<PeerState> = weights.iter().map(|&w| PeerState::new(w)).collect();
        let all: Vec<usize> = (0..weights.len()).collect();
        (0..n)
            .map(|_| (b'a' + pick(&mut st, weights, &all).unwrap() as u8) as char)
            .collect()
    }

    #[test]
    fn nginx_sequence_5_1_1() {
        assert_eq!(run(&[5, 1, 1], 7), "aabacaa");
        assert_eq!(run(&[5, 1, 1], 14), "aabacaaaabacaa");
    }

    #[test]
    fn equal_weights_alternate_first_wins_ties() {
        assert_eq!(run(&[1, 1, 1], 6), "abcabc");
        assert_eq!(run(&[2, 1], 6), "abaaba");
    }
}
