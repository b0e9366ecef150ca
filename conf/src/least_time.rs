//! `least_time: { measure, inflight }`, the block of `balance: least_time`.
//!
//! nginx counterpart: the `least_time header | last_byte [inflight]`
//! directive (`ngx_http_upstream_least_time_module.c`). The block is
//! optional (`measure: header`, `inflight: false`, as `least_time header`);
//! validation folds it into [`crate::Balance::LeastTime`], so the balancer
//! sees one value.

use crate::upstream::{Balance, Upstream};
use crate::validate::Problem;
use serde::Deserialize;

/// nginx `least_time header | last_byte [inflight]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeastTime {
    pub measure: Measure,
    /// Requests in flight count in a server's time (nginx `inflight`).
    pub inflight: bool,
}

/// Which time `least_time` averages per server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// To the end of the response header (`$upstream_header_time`).
    #[default]
    Header,
    /// To the response's last byte (`$upstream_response_time`).
    LastByte,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Header => "header",
            Measure::LastByte => "last_byte",
        }
    }
}

/// `least_time:` goes with `balance: least_time`, into which it is folded.
pub(crate) fn check(u: &mut Upstream, base: &str, out: &mut Vec<Problem>) {
    match (u.least_time, &mut u.balance) {
        (Some(lt), Balance::LeastTime(b)) => *b = lt,
        (Some(_), other) => out.push(Problem::at_key(
            format!("{base}.least_time"),
            format!(
                "least_time goes with balance: least_time, not balance: {}",
                other.as_str()
            ),
        )),
        (None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;

    fn group(body: &str) -> Result<Upstream, String> {
        let text = format!(
            "listen: [127.0.0.1:8080]\nupstreams:\n  app:\n{body}    servers: [ {{ addr: 127.0.0.1:1 }}, {{ addr: 127.0.0.1:2, backup: true }} ]\nroutes:\n  - upstream: app\n"
        );
        load_str("f.yaml", &text)
            .map(|c| c.upstream("app").cloned().expect("group app"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn balance_alone_is_least_time_header() {
        let u = group("    balance: least_time\n").unwrap();
        assert_eq!(
            u.balance,
            Balance::LeastTime(LeastTime {
                measure: Measure::Header,
                inflight: false
            })
        );
        assert_eq!(u.balance.as_str(), "least_time");
    }

    #[test]
    fn the_block_is_folded_into_the_balance() {
        let u = group(
            "    balance: least_time\n    least_time: { measure: last_byte, inflight: true }\n",
        )
        .unwrap();
        assert_eq!(
            u.balance,
            Balance::LeastTime(LeastTime {
                measure: Measure::LastByte,
                inflight: true
            })
        );
        let u = group("    balance: least_time\n    least_time: { inflight: true }\n").unwrap();
        assert_eq!(
            u.balance,
            Balance::LeastTime(LeastTime {
                measure: Measure::Header,
                inflight: true
            })
        );
    }

    #[test]
    fn block_without_the_balance_points_at_its_key() {
        let e = group("    least_time: { measure: header }\n").unwrap_err();
        assert_eq!(
            e.trim(),
            "f.yaml:4:5: least_time goes with balance: least_time, not balance: round_robin"
        );
        let e = group("    balance: least_conn\n    least_time: {}\n").unwrap_err();
        assert!(e.starts_with("f.yaml:5:5: least_time goes with"), "{e}");
    }

    #[test]
    fn unknown_measure_or_key_points_at_it() {
        let e = group("    balance: least_time\n    least_time: { measure: first_byte }\n")
            .unwrap_err();
        assert!(e.starts_with("f.yaml:5:28: "), "{e}");
        assert!(e.contains("first_byte"), "{e}");
        let e = group("    balance: least_time\n    least_time: { inflite: true }\n").unwrap_err();
        assert!(e.starts_with("f.yaml:5:19: "), "{e}");
        assert!(e.contains("inflite"), "{e}");
    }
}
