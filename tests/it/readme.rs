//! The README's snippets that can run here do run: the shell consumer loop
//! against `gcal-syncd demo --keep-running`. (The demo and check-config on
//! config.example.toml have their own tests; nginx and Caddy are not here.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::{bin, require_tools, TempDir};

const README: &str = include_str!("../../README.md");

/// The ```sh block after the `feed-loop` marker.
pub fn feed_loop() -> String {
    let after = README
        .split("<!-- feed-loop:")
        .nth(1)
        .expect("feed-loop marker in README");
    let block = after
        .split("```sh\n")
        .nth(1)
        .expect("sh block after the marker");
    block
        .split("```")
        .next()
        .expect("closing fence")
        .to_string()
}

#[test]
#[ignore = "needs curl and jq; .ci/run installs them"]
fn the_readme_feed_loop_follows_the_demo_feed_and_keeps_its_cursor() {
    require_tools(&["curl", "jq"]);
    let dir = TempDir::new("readme");
    let script = dir.write("loop.sh", &feed_loop());
    let mut demo = Command::new(bin())
        .args(["demo", "--keep-running"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo");
    let mut api = None;
    for line in BufReader::new(demo.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
    {
        if let Some(rest) = line.trim().strip_prefix("curl -s 'http://") {
            api = rest.split("/v1/changes").next().map(String::from);
            break;
        }
        assert!(!line.contains("FAILED"), "the demo failed: {line}");
    }
    let api = api.expect("the demo printed its curl examples");
    let cursor = dir.path().join("cursor");
    let out = Command::new("timeout")
        .args(["5", "sh"])
        .arg(&script)
        .env("API", format!("http://{api}"))
        .env("CURSOR", &cursor)
        .output()
        .expect("run the loop");
    let _ = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status();
    let _ = demo.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() >= 50,
        "the loop printed {} lines:\n{text}",
        lines.len()
    );
    assert!(lines[0].starts_with("1 created primary "), "{}", lines[0]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" updated primary ") && l.ends_with(" summary")),
        "{text}"
    );
    let saved: u64 = std::fs::read_to_string(&cursor)
        .expect("cursor file")
        .trim()
        .parse()
        .expect("a seq");
    assert_eq!(
        saved,
        lines.len() as u64,
        "the cursor is the last seq printed"
    );
}
