//! least_conn: the fewest requests in progress per weight; ties go to smooth
//! weighted round robin among the tied peers.
//!
//! nginx counterpart: `ngx_http_upstream_get_least_conn_peer`. Compared as
//! `conns_a * weight_b < conns_b * weight_a`; counts are live (a request
//! holds its peer until its response is done).

use crate::passive_health::PeerState;

pub fn pick(states: &mut [PeerState], weights: &[u32], eligible: &[usize]) -> Option<usize> {
    let key = |i: usize| (u64::from(states[i].conns), u64::from(weights[i]));
    let mut best: Option<usize> = None;
    let mut many = false;
    for &i in eligible {
        match best {
            None => best = Some(i),
            Some(b) => {
                let ((ci, wi), (cb, wb)) = (key(i), key(b));
                if ci * wb < cb * wi {
                    best = Some(i);
                    many = false;
                } else if ci * wb == cb * wi {
                    many = true;
                }
            }
        }
    }
    let b = best?;
    if !many {
        return Some(b);
    }
    let (cb, wb) = key(b);
    let tied: Vec<usize> = eligible
        .iter()
        .copied()
        .filter(|&i| i >= b && key(i).0 * wb == cb * key(i).1)
        .collect();
    crate::smooth_weighted::pick(states, weights, &tied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewest_per_weight_then_round_robin() {
        let mut st: Vec<PeerState> = (0..3).map(|_| PeerState::new(1)).collect();
        let w = [1, 1, 1];
        st[0].conns = 2;
        st[1].conns = 1;
        st[2].conns = 1;
        let all = [0, 1, 2];
        assert_eq!(pick(&mut st, &w, &all), Some(1));
        assert_eq!(pick(&mut st, &w, &all), Some(2), "ties rotate");
        st[2].conns = 0;
        assert_eq!(pick(&mut st, &w, &all), Some(2));
        // weight 2 with 2 conns equals weight 1 with 1 conn
        let mut st: Vec<PeerState> = [1, 2].iter().map(|&w| PeerState::new(w)).collect();
        st[0].conns = 1;
        st[1].conns = 3;
        assert_eq!(pick(&mut st, &[1, 2], &[0, 1]), Some(0));
    }
}
