//! sled's own floor for the store's layout choices (issue #13): 100k
//! events written as P3 writes them (pages of 250, each a lookup per id,
//! one transaction and one flush per page, random 26-character ids), with
//! placeholder bytes of the sizes the daemon writes and nothing else:
//! - `heads+bodies+records`: a 150-byte head under the random id, a
//!   716-byte body and a 300-byte record under growing keys, in one
//!   transaction (schema 2);
//! - `heads+records`: the head, and the record carrying the body it
//!   introduces (1016 bytes), in one transaction: one write per event less;
//! - `three batches`: schema 2's writes as one sled `Batch` per tree (each
//!   tree atomic alone, not together: what giving up the transaction buys).
//!
//! Each runs in a child process so that its peak RSS is its own.
//! Run: `cargo bench --bench layouts`. Prints markdown rows.

mod common;

use std::time::Instant;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

const EVENTS: usize = 100_000;
const PAGE: usize = 250;
const CHILD: &str = "GCAL_SYNCD_LAYOUT_BENCH";
const LAYOUTS: [&str; 3] = ["heads+bodies+records", "heads+records", "three batches"];

fn main() {
    if let Ok(layout) = std::env::var(CHILD) {
        run(&layout);
        return;
    }
    for layout in LAYOUTS {
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env(CHILD, layout)
            .output()
            .expect("child");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

type TxResult = Result<(), TransactionError<()>>;

fn run(layout: &str) {
    let dir = std::env::temp_dir().join(format!("gcal-syncd-bench-layout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = sled::Config::new()
        .path(&dir)
        .cache_capacity(32 << 20)
        .open()
        .expect("open");
    let tree = |name: &str| db.open_tree(name).expect("tree");
    let (heads, bodies, log) = (tree("events"), tree("bodies"), tree("changes"));
    let (head, body, rec) = (vec![b'h'; 150], vec![b'b'; 716], vec![b'r'; 300]);
    let with_body: Vec<u8> = rec.iter().chain(&body).copied().collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let t = Instant::now();
    for page in 0..EVENTS / PAGE {
        let keys: Vec<String> = (0..PAGE)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                format!("{rng:026x}")
            })
            .collect();
        for k in &keys {
            assert!(heads.get(k).expect("get").is_none());
        }
        let seq = |i: usize| ((page * PAGE + i) as u64).to_be_bytes();
        let ok = Ok::<(), ConflictableTransactionError<()>>(());
        match layout {
            "heads+bodies+records" => {
                let r: TxResult = (&heads, &bodies, &log).transaction(|(h, b, l)| {
                    for (i, k) in keys.iter().enumerate() {
                        h.insert(k.as_bytes(), head.clone())?;
                        b.insert(&seq(i), body.clone())?;
                        l.insert(&seq(i), rec.clone())?;
                    }
                    ok.clone()
                });
                r.expect("transaction");
            }
            "heads+records" => {
                let r: TxResult = (&heads, &log).transaction(|(h, l)| {
                    for (i, k) in keys.iter().enumerate() {
                        h.insert(k.as_bytes(), head.clone())?;
                        l.insert(&seq(i), with_body.clone())?;
                    }
                    ok.clone()
                });
                r.expect("transaction");
            }
            _ => {
                let mut batches = [
                    sled::Batch::default(),
                    sled::Batch::default(),
                    sled::Batch::default(),
                ];
                for (i, k) in keys.iter().enumerate() {
                    batches[0].insert(k.as_bytes(), head.clone());
                    batches[1].insert(&seq(i), body.clone());
                    batches[2].insert(&seq(i), rec.clone());
                }
                let [h, b, l] = batches;
                bodies.apply_batch(b).expect("batch");
                log.apply_batch(l).expect("batch");
                heads.apply_batch(h).expect("batch");
            }
        }
        db.flush().expect("flush");
    }
    let took = t.elapsed();
    let hwm = common::peak_rss(None);
    println!(
        "| sled alone, {layout}, pages of {PAGE} | {:.2} s | {:.0} events/s | peak RSS {hwm} |",
        took.as_secs_f64(),
        EVENTS as f64 / took.as_secs_f64()
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}
