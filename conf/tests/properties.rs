//! For any text, the loader answers without panicking, and every problem
//! it reports has a position (`FILE:LINE:COLUMN`, 1-based, inside the
//! text).

use proptest::prelude::*;

const VALID: &str = "\
listen: [127.0.0.1:8080]
client_header_timeout: 30s
upstreams:
  app:
    balance: least_conn
    keepalive: 16
    servers:
      - { addr: 127.0.0.1:9001, weight: 5, max_fails: 3, fail_timeout: 30s }
      - { addr: 127.0.0.1:9002, backup: true }
routes:
  - match: { host: example.com, path_prefix: /api/ }
    upstream: app
    proxy:
      buffers: { count: 4, size: 8k }
      busy_buffers_size: 16k
      next_upstream: [error, timeout, http_502]
      set_headers: { X-Real-IP: \"$remote_addr\" }
  - return: { status: 404, body: \"no\\n\" }
";

fn check(text: &str) -> Result<(), TestCaseError> {
    let lines = text.lines().count().max(1) + 1;
    if let Err(errors) = ferry_conf::load_str("f.yaml", text) {
        prop_assert!(!errors.0.is_empty(), "an error without a problem");
        for e in &errors.0 {
            prop_assert!(e.line >= 1 && e.column >= 1, "{e}");
            prop_assert!(e.line <= lines, "line {} of {lines}: {e}", e.line);
            prop_assert!(!e.message.is_empty());
            let prefix = format!("f.yaml:{}:{}: ", e.line, e.column);
            prop_assert!(e.to_string().starts_with(&prefix), "{}", e);
        }
    }
    Ok(())
}

/// One edit of the valid file: a byte range replaced by some text.
fn edit() -> impl Strategy<Value = (usize, usize, String)> {
    (
        0..VALID.len(),
        0usize..12,
        prop::sample::select(vec![
            "",
            ":",
            " ",
            "\n",
            "- ",
            "[",
            "]",
            "{",
            "}",
            "\"",
            "'",
            "&a",
            "*a",
            "0",
            "-1",
            "99999999999999999999",
            "1x",
            "off",
            "true",
            "~",
            "#",
            "\t",
            "\u{feff}",
            "é",
            "listen: []",
            "servers: []",
            "weight: 0",
            "upstream: nope",
            "  ",
            "? ",
        ])
        .prop_map(str::to_string),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_text_gets_an_answer_with_positions(text in "[a-z0-9:\\-\\[\\]{}#&*!|>'\" \n.,_$]{0,200}") {
        check(&text)?;
    }

    #[test]
    fn any_edit_of_a_good_file_gets_an_answer_with_positions(edits in prop::collection::vec(edit(), 1..4)) {
        let mut text = VALID.to_string();
        for (at, len, with) in edits {
            let mut start = at.min(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(start..end, &with);
        }
        check(&text)?;
    }
}
