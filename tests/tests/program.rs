//! A program built on Ferry owns its command line and its start: its name,
//! version and description; `make` sees the settings and the loaded
//! configuration, runs under `-t`, and refuses with a position; a group
//! the program needs is checked at start and at each reload.

use ferry_tests::backend::Backend;
use ferry_tests::ferry::{example_command, fresh_dir, Ferry};

fn write(yaml: &str) -> String {
    let conf = fresh_dir().join("c.yaml");
    std::fs::write(&conf, yaml).expect("yaml");
    conf.display().to_string()
}

#[test]
fn a_program_has_its_own_name_version_and_description() {
    let (code, out, _) = example_command("canary", &["-V"]);
    assert_eq!((code, out.as_str()), (0, "canary 1.0.0\n"));
    let (code, out, _) = example_command("canary", &["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("Header-based canary routing on Ferry"),
        "{out}"
    );
    assert!(out.contains("Usage: canary"), "{out}");
    for flag in [
        "-c, --conf",
        "-t, --test",
        "-s, --signal",
        "--upgrade",
        "SIGHUP reloads",
    ] {
        assert!(out.contains(flag), "{flag}: {out}");
    }
}

/// `-t` runs `make`: a group the program names that the YAML lacks is a
/// `FILE:LINE:COLUMN` error before anything serves (canary with
/// `Start::require_group`; auth_gate with the loaded `Config`).
#[test]
fn check_runs_make_and_its_problems_have_positions() {
    let conf = write(
        "listen: [127.0.0.1:1]\ncanary: { header: X, value: y, group: nope }\nupstreams:\n  stable: { servers: [{ addr: \"127.0.0.1:2\" }] }\nroutes:\n  - upstream: stable\n",
    );
    let (code, out, err) = example_command("canary", &["-t", "-c", &conf]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("c.yaml:2:39: unknown upstream `nope`: the program sends requests to it"),
        "{err}"
    );
    let conf = write(
        "listen: [127.0.0.1:1]\nauth: { group: gone, path: /check, copy_headers: [] }\nupstreams:\n  app: { servers: [{ addr: \"127.0.0.1:2\" }] }\nroutes:\n  - upstream: app\n",
    );
    let (code, _, err) = example_command("auth_gate", &["-t", "-c", &conf]);
    assert_eq!(code, 1);
    assert!(
        err.contains("c.yaml:2:16: unknown upstream `gone`"),
        "{err}"
    );
}

/// A reload that removes the group the program needs is refused, and the
/// program keeps serving with it.
#[tokio::test]
async fn a_reload_cannot_take_away_a_group_the_program_needs() {
    let (stable, canary) = (
        Backend::named("stable").await,
        Backend::named("canary").await,
    );
    let conf = |with_canary: bool| {
        let canary_group = if with_canary {
            format!(
                "  canary: {{ servers: [{{ addr: \"{}\" }}] }}\n",
                canary.addr
            )
        } else {
            String::new()
        };
        format!(
            "canary: {{ header: X-Canary, value: always, group: canary }}\nupstreams:\n  stable: {{ servers: [{{ addr: \"{}\" }}] }}\n{canary_group}routes:\n  - upstream: stable\n",
            stable.addr
        )
    };
    let ferry = Ferry::start_example("canary", &conf(true)).await;
    ferry.rewrite(&conf(false));
    ferry.reload().await;
    let log = ferry.log();
    assert!(
        log.contains("unknown upstream `canary`: the program sends requests to it"),
        "{log}"
    );
    let r = ferry_tests::client::http()
        .get(ferry.url("/"))
        .header("X-Canary", "always")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "canary");
}

/// A reload whose program settings changed says that the program keeps
/// the ones it started with (they were checked, not silently dropped);
/// one whose settings are the same says nothing of them.
#[tokio::test]
async fn a_reload_says_when_the_programs_settings_changed() {
    let (stable, canary) = (
        Backend::named("stable").await,
        Backend::named("canary").await,
    );
    let conf = |value: &str| {
        format!(
            "canary: {{ header: X-Canary, value: {value}, group: canary }}\nupstreams:\n  stable: {{ servers: [{{ addr: \"{}\" }}] }}\n  canary: {{ servers: [{{ addr: \"{}\" }}] }}\nroutes:\n  - upstream: stable\n",
            stable.addr, canary.addr
        )
    };
    let ferry = Ferry::start_example("canary", &conf("always")).await;
    ferry.rewrite(&conf("always"));
    ferry.reload().await;
    assert!(!ferry.log().contains("settings changed"), "{}", ferry.log());
    ferry.rewrite(&conf("sometimes"));
    ferry.reload().await;
    let log = ferry.log();
    assert!(
        log.contains(
            "the program's `canary` settings changed; the program keeps the ones it started with"
        ),
        "{log}"
    );
}
