//! `/v1/changes?account=&calendar_id=`: repeatable filters on the pull
//! API; the cursor stays the global seq and moves past records a filtered
//! reader does not want.

use std::time::Duration;

use gcal_syncd::emulator::Edit;
use serde_json::Value;

use crate::emu::event;
use crate::harness::{last_seq, Harness, Setup, CAL};

const WAIT: Duration = Duration::from_secs(60);

fn calendars(body: &Value) -> Vec<&str> {
    body["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["calendar_id"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_pick_calendars_and_the_cursor_moves_past_the_rest() {
    let mut h = Harness::start("filters", Setup::default()).await;
    let team = h
        .emu
        .create_calendar(CAL, None, "Team", "Europe/Paris")
        .expect("calendar");
    h.emu
        .edit(&team, Edit::Insert(event("team 1", 3)), false)
        .await
        .expect("insert");
    h.set_calendars(&["primary", &team]).await;
    h.emu
        .edit(CAL, Edit::Insert(event("primary 1", 2)), true)
        .await
        .expect("insert");
    let all = h
        .wait_changes("one record per calendar", 0, WAIT, |c| c.len() >= 2)
        .await;
    let head = last_seq(&all);
    let team_q = form_urlencoded::byte_serialize(team.as_bytes()).collect::<String>();

    let (status, body) = h
        .get(&format!("/v1/changes?after=0&calendar_id={team_q}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(calendars(&body), [team.as_str()]);
    assert_eq!(
        body["next"], head,
        "the cursor moves past the other calendar"
    );

    let (_, body) = h
        .get("/v1/changes?after=0&account=emu&calendar_id=primary")
        .await;
    assert_eq!(calendars(&body), ["primary"]);
    let (_, body) = h
        .get(&format!(
            "/v1/changes?after=0&calendar_id=primary&calendar_id={team_q}"
        ))
        .await;
    assert_eq!(calendars(&body).len(), 2, "{body}");
    let (_, body) = h.get("/v1/changes?after=0&account=someone-else").await;
    assert_eq!(
        (calendars(&body).len(), &body["next"]),
        (0, &Value::from(head))
    );
    let (status, body) = h.get("/v1/changes?after=0&after=1").await;
    assert_eq!(status, 400, "{body}");

    // A long-poll on one calendar answers with that calendar's record, not
    // with the other's that came first.
    let poll = {
        let api = h.api.clone();
        let url = format!("http://{api}/v1/changes?after={head}&calendar_id={team_q}&wait=30");
        tokio::spawn(async move {
            let r = reqwest::get(url).await.expect("long-poll");
            r.json::<Value>().await.expect("json")
        })
    };
    h.emu
        .edit(CAL, Edit::Insert(event("primary 2", 4)), true)
        .await
        .expect("insert");
    h.wait_changes("the primary record", head, WAIT, |c| !c.is_empty())
        .await;
    h.emu
        .edit(&team, Edit::Insert(event("team 2", 5)), true)
        .await
        .expect("insert");
    let body = tokio::time::timeout(WAIT, poll)
        .await
        .expect("the long-poll answers")
        .expect("task");
    assert_eq!(calendars(&body), [team.as_str()], "{body}");
}
