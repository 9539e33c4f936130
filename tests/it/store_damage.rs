//! A store under faults, driven over HTTP. On a full disk the feed pauses
//! (nothing unwritten is served, /healthz says why), resumes by itself once
//! there is room, and every seq a reader saw keeps its record, across a
//! restart too. A store truncated or emptied while the daemon was down is
//! detected, moved aside and replaced under a new store id, with seqs above
//! the old head: a consumer's cursor is never ahead of the new feed.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gcal_syncd::emulator::Edit;
use serde_json::{json, Value};

use crate::emu::{self, event};
use crate::harness::{last_seq, metric, of_kind, summary, Harness, Setup, CAL};

const WAIT: Duration = Duration::from_secs(90);

/// A small tmpfs mounted over a directory; lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` over `dir`, keeping what `dir` held.
    fn mount_over(dir: &Path, size: &str) -> Tmpfs {
        let held = dir.with_extension("before-mount");
        std::fs::rename(dir, &held).expect("move the store aside");
        std::fs::create_dir(dir).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs (it runs as root in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let copied = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", held.display()))
            .arg(dir)
            .status()
            .expect("run cp");
        assert!(copied.success(), "copy the store onto the tmpfs");
        Tmpfs(dir.to_path_buf())
    }

    /// Fills the file system with `fill` until it has no room left.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("fill");
        let mut f = std::fs::File::create(&path).expect("fill file");
        for chunk in [1 << 20, 4096, 1] {
            let block = vec![0u8; chunk];
            while f.write_all(&block).is_ok() {}
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Inserts `n` events with big descriptions: sled rewrites free space in
/// its file first, so only a few segments' worth of data needs new blocks.
async fn insert(h: &Harness, summary: &str, n: u32) {
    for i in 0..n {
        let mut e = event(&format!("{summary} {i}"), 2);
        e["description"] = json!("x".repeat(6000));
        h.emu
            .edit(CAL, Edit::Insert(e), true)
            .await
            .expect("insert");
    }
}

async fn wait_health(h: &Harness, status: u16) -> Value {
    emu::wait_until_async(&format!("/healthz to answer {status}"), WAIT, || async {
        let (s, body) = h.get("/healthz").await;
        (s == status).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root to mount a tmpfs; .ci/run runs it"]
async fn a_full_disk_pauses_the_feed_which_resumes_by_itself_and_no_seq_changes_meaning() {
    let mut h = Harness::start("full-disk", Setup::default()).await;
    h.wait_idle_with_token(WAIT).await;
    h.stop_daemon().await;
    let disk = Tmpfs::mount_over(&h.dir.path().join("store"), "20m");
    h.start_daemon().await;
    h.wait_idle_with_token(WAIT).await;

    insert(&h, "before", 10).await;
    let before = h
        .wait_changes("the 10 made before", 0, WAIT, |c| {
            of_kind(c, "created").len() >= 10
        })
        .await;
    let head = last_seq(&before);

    let fill = disk.fill();
    insert(&h, "while full", 200).await;
    let health = wait_health(&h, 503).await;
    assert_eq!(health["status"], "failing", "{health}");
    assert!(
        health["store_error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left")),
        "{health}"
    );
    // Nothing above the durable head is served while writes fail: no
    // record, or (sled fails reads too until the reopen) a 503 that says so.
    // (Pages written before the disk was really full are durable: the head
    // may have moved past `head`.)
    let durable = health["feed_head"].as_u64().expect("feed_head");
    assert!(durable >= head, "{health}");
    let (status, body) = h.get(&format!("/v1/changes?after={durable}")).await;
    match status {
        200 => assert_eq!(
            body["changes"].as_array().map(Vec::len),
            Some(0),
            "served above the durable head {durable}: {}",
            summary(body["changes"].as_array().map_or(&[][..], |v| &v[..]))
        ),
        503 => assert!(
            body["error"].as_str().is_some_and(|e| e.contains("paused")),
            "{}",
            body["error"]
        ),
        other => panic!("{other}: {}", body["error"]),
    }
    let (_, cals) = h.get("/v1/calendars").await;
    assert!(cals["store"]["error"].is_string(), "{cals}");
    let scrape = h.scrape().await;
    assert_eq!(metric(&scrape, "gcal_syncd_store_write_failing", &[]), 1.0);

    // Room again: no restart, the feed continues by itself.
    std::fs::remove_file(&fill).expect("free the disk");
    wait_health(&h, 200).await;
    let all = h
        .wait_changes("all 210 changes", 0, WAIT, |c| {
            of_kind(c, "created").len() >= 210
        })
        .await;
    assert_eq!(
        &all[..before.len()],
        &before[..],
        "seqs a reader saw kept their records"
    );
    let seqs: Vec<u64> = all.iter().filter_map(|c| c["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs without gaps or repeats: {seqs:?}"
    );
    let ids: HashSet<&str> = all.iter().filter_map(|c| c["event_id"].as_str()).collect();
    assert_eq!(ids.len(), all.len(), "one record per event");
    let summaries: HashSet<&str> = all
        .iter()
        .filter_map(|c| c["event"]["summary"].as_str())
        .collect();
    for i in 0..200 {
        assert!(
            summaries.contains(format!("while full {i}").as_str()),
            "{summaries:?}"
        );
    }
    let scrape = h.scrape().await;
    assert_eq!(metric(&scrape, "gcal_syncd_store_write_failing", &[]), 0.0);
    assert!(metric(&scrape, "gcal_syncd_store_write_failures_total", &[]) >= 1.0);

    // And after a restart every seq still means the same record.
    h.stop_daemon().await;
    h.start_daemon().await;
    assert!(
        h.changes_after(0).await == all,
        "records changed across a restart"
    );
    h.stop_daemon().await;
    drop(disk);
}

/// Damages the stopped daemon's store the ways an operator or a disk can.
async fn damaged_store_is_replaced(damage: &str) {
    let mut h = Harness::start(&format!("damaged-{damage}"), Setup::default()).await;
    h.wait_idle_with_token(WAIT).await;
    insert(&h, "kept", 12).await;
    let before = h
        .wait_changes("12 created", 0, WAIT, |c| of_kind(c, "created").len() >= 12)
        .await;
    let head = last_seq(&before);
    let (_, page) = h.get("/v1/changes?after=0&limit=1").await;
    let old_id = page["store_id"]
        .as_str()
        .expect("store_id on every answer")
        .to_string();
    h.stop_daemon().await;

    let db = h.dir.path().join("store").join("db");
    match damage {
        "truncate-0" => std::fs::File::options()
            .write(true)
            .open(&db)
            .expect("db")
            .set_len(0)
            .expect("truncate"),
        "truncate-half" => {
            let len = std::fs::metadata(&db).expect("db").len();
            std::fs::File::options()
                .write(true)
                .open(&db)
                .expect("db")
                .set_len(len / 2)
                .expect("truncate")
        }
        "rm" => std::fs::remove_file(&db).expect("rm db"),
        other => panic!("unknown damage {other}"),
    }
    h.start_daemon().await;
    let (status, health) = h.get("/healthz").await;
    assert_eq!(status, 200, "{health}");
    assert!(
        health["store_recovered_from"].is_string(),
        "{damage}: {health}"
    );
    let (_, cals) = h.get("/v1/calendars").await;
    assert!(cals["store"]["recovered_from"].is_string(), "{cals}");
    // The consumer at `head` gets the resynced calendar above its cursor,
    // under a new store id that tells it the store was replaced.
    let after = h
        .wait_changes("the resync", head, WAIT, |c| {
            of_kind(c, "created").len() >= 12
        })
        .await;
    assert!(
        after.iter().all(|c| c["seq"].as_u64() > Some(head)),
        "{damage}"
    );
    let (_, page) = h.get(&format!("/v1/changes?after={head}&limit=1")).await;
    let new_id = page["store_id"].as_str().expect("store_id");
    assert_ne!(
        new_id, old_id,
        "{damage}: a replaced store must not keep its id"
    );
    assert_eq!(health["store_id"], new_id);
    h.stop_daemon().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_emptied_truncated_or_deleted_while_down_is_detected_not_served() {
    for damage in ["truncate-0", "truncate-half", "rm"] {
        damaged_store_is_replaced(damage).await;
    }
}
