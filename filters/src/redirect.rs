//! Rewriting `Location` and `Refresh` from the upstream.
//!
//! nginx counterpart: `proxy_redirect` (`ngx_http_proxy_rewrite_redirect`).
//! `default` is what nginx derives for `proxy_pass http://GROUP` (no URI
//! part): `proxy_redirect http://GROUP/ /`. Ferry passes the request URI
//! unchanged, so the upstream's `/path` is the client's `/path`. A rewritten
//! `Location` is then made absolute on the client's scheme and host, as
//! nginx's `absolute_redirect on` does; `Refresh` stays as rewritten.

use ferry_conf::Redirect;

#[derive(Debug, Clone, Default)]
pub struct RedirectPlan {
    rules: Vec<(String, String)>,
}

impl RedirectPlan {
    pub fn new(conf: &Redirect, group: Option<&str>) -> RedirectPlan {
        let rules = match conf {
            Redirect::Off => Vec::new(),
            Redirect::Default => group
                .map(|g| vec![(format!("http://{g}/"), "/".to_string())])
                .unwrap_or_default(),
            Redirect::Rules(r) => r.iter().map(|r| (r.from.clone(), r.to.clone())).collect(),
        };
        RedirectPlan { rules }
    }

    pub fn is_off(&self) -> bool {
        self.rules.is_empty()
    }

    fn apply(&self, url: &str) -> Option<String> {
        self.rules
            .iter()
            .find(|(from, _)| url.starts_with(from.as_str()))
            .map(|(from, to)| format!("{to}{}", &url[from.len()..]))
    }

    /// A new `Location` value, or `None` to keep it.
    pub fn location(&self, value: &str, scheme: &str, host: &str) -> Option<String> {
        let rewritten = self.apply(value)?;
        Some(if rewritten.starts_with('/') && !host.is_empty() {
            format!("{scheme}://{host}{rewritten}")
        } else {
            rewritten
        })
    }

    /// A new `Refresh` value (`5; url=...`), or `None` to keep it.
    pub fn refresh(&self, value: &str) -> Option<String> {
        let lower = value.to_ascii_lowercase();
        let at = lower.find("url=")? + 4;
        let rewritten = self.apply(&value[at..])?;
        Some(format!("{}{rewritten}", &value[..at]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_conf::RedirectRule;

    #[test]
    fn default_maps_group_to_client_host() {
        let p = RedirectPlan::new(&Redirect::Default, Some("app"));
        assert_eq!(
            p.location("http://app/login?x=1", "http", "example.com:8080")
                .as_deref(),
            Some("http://example.com:8080/login?x=1")
        );
        assert_eq!(p.location("http://other/x", "http", "h"), None);
        assert_eq!(
            p.refresh("3; url=http://app/next").as_deref(),
            Some("3; url=/next")
        );
        assert!(RedirectPlan::new(&Redirect::Off, Some("app")).is_off());
    }

    #[test]
    fn explicit_rules_first_match_wins() {
        let rules = Redirect::Rules(vec![
            RedirectRule {
                from: "http://a/".into(),
                to: "https://b/".into(),
            },
            RedirectRule {
                from: "http://a/".into(),
                to: "/never/".into(),
            },
        ]);
        let p = RedirectPlan::new(&rules, Some("g"));
        assert_eq!(
            p.location("http://a/x", "http", "h").as_deref(),
            Some("https://b/x")
        );
    }
}
