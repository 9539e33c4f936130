//! The store's own ceiling for P3: 100k event versions and their `created`
//! change records written through `Store::apply_page` exactly as a full sync
//! writes them (one transaction and one flush per page, random 26-character
//! ids as Google gives, bodies shaped like the emulator's), with no HTTP,
//! JSON parsing or sync logic around it. Each variant runs in a child
//! process so that its peak RSS is its own.
//! Run: `cargo bench --bench store`. Prints markdown rows.

mod common;

use std::sync::LazyLock;
use std::time::Instant;

use gcal_syncd::emulator::dates;
use gcal_syncd::rawjson::RawJson;
use gcal_syncd::store::*;
use serde_json::json;

const EVENTS: usize = 100_000;
const CHILD: &str = "GCAL_SYNCD_STORE_BENCH_PAGE";

fn main() {
    if let Ok(page) = std::env::var(CHILD) {
        run(page.parse().expect("page size"));
        return;
    }
    for page in [2500, 250] {
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env(CHILD, page.to_string())
            .output()
            .expect("child");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn run(page: usize) {
    let dir = std::env::temp_dir().join(format!("gcal-syncd-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir).expect("open");
    let cal = CalendarKey::new("bench", "primary");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut seq = 0;
    let t = Instant::now();
    for p in 0..EVENTS / page {
        let mut upserts = Vec::with_capacity(page);
        let mut changes = Vec::with_capacity(page);
        for i in 0..page {
            let id = random_id(&mut rng);
            // The sync looks every listed id up before it writes.
            assert!(store.event(&cal, &id).expect("get").is_none());
            let body = RawJson::from(body(&id, p * page + i));
            seq += 1;
            changes.push(ChangeRecord {
                seq: gcal_syncd::store::Seq::new(seq),
                account: cal.account.clone(),
                calendar_id: cal.calendar_id.clone(),
                event_id: id.clone(),
                change: ChangeKind::Created,
                etag: Some("\"3481516243862000\"".into()),
                sequence: Some(0),
                updated: Some(NOW.clone()),
                changed_fields: vec![],
                event: gcal_syncd::store::Body::New(body.clone()),
                previous: None,
                detected_at: gcal_syncd::time::Timestamp::now(),
            });
            upserts.push(EventVersion {
                id,
                etag: Some("\"3481516243862000\"".into()),
                sequence: Some(0),
                updated: Some(NOW.clone()),
                status: Some("confirmed".into()),
                generation: 1,
                last_change: Default::default(),
                body: gcal_syncd::store::Body::New(body),
            });
        }
        store
            .apply_page(PageWrite {
                calendar: cal.clone(),
                upserts,
                deletes: vec![],
                changes,
                state: CalendarState::default(),
            })
            .expect("apply");
        store.flush_blocking().expect("flush");
    }
    let took = t.elapsed();
    let hwm = common::peak_rss(None);
    println!(
        "| store alone: {EVENTS} events + records, pages of {page} | {:.2} s | {:.0} events/s | peak RSS {hwm} | {} MB on disk |",
        took.as_secs_f64(),
        EVENTS as f64 / took.as_secs_f64(),
        store.size_on_disk().unwrap_or(0) >> 20
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The time every record and body carries: the bench's start, in Google's
/// millisecond form (the same length as any other).
static NOW: LazyLock<String> =
    LazyLock::new(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));

/// xorshift64: ids that land all over the key space, as Google's do.
fn random_id(state: &mut u64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    (0..26)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            ALPHABET[(*state % 32) as usize] as char
        })
        .collect()
}

/// An Event resource as the emulator lists it for the P3 calendar.
fn body(id: &str, i: usize) -> serde_json::Value {
    let organizer = format!("bench{}example.com", '@');
    json!({
        "kind": "calendar#event",
        "etag": "\"3481516243862000\"",
        "id": id,
        "status": "confirmed",
        "htmlLink": format!("https://www.google.com/calendar/event?eid={id}"),
        "created": *NOW,
        "updated": *NOW,
        "summary": format!("event {i}"),
        "description": "a typical event body with a few fields",
        "location": "Room 4",
        "creator": {"email": organizer, "self": true},
        "organizer": {"email": organizer, "self": true},
        "start": {"dateTime": dates::utc(1 + (i % 28) as i64, (i % 24) as u32, 0), "timeZone": "UTC"},
        "end": {"dateTime": dates::utc(1 + (i % 28) as i64, (i % 24) as u32, 30), "timeZone": "UTC"},
        "iCalUID": format!("{id}{}google.com", '@'),
        "sequence": 0,
        "reminders": {"useDefault": true},
        "eventType": "default"
    })
}
