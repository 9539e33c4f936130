"""Drives the emulator with Google's own Python client library.

If the emulator only fits our Rust client, this fails. Run by
emulator/tests/it/python.rs with EMULATOR_URL and EMULATOR_CREDENTIALS set.
"""
import json
import os
import sys
import urllib.request
from datetime import datetime, timedelta, timezone

from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

ROOT = os.environ["EMULATOR_URL"].rstrip("/")
creds = service_account.Credentials.from_service_account_file(
    os.environ["EMULATOR_CREDENTIALS"],
    scopes=["https://www.googleapis.com/auth/calendar"],
)
svc = build(
    "calendar",
    "v3",
    credentials=creds,
    static_discovery=True,
    cache_discovery=False,
    client_options={"api_endpoint": ROOT + "/calendar/v3/"},
)
events = svc.events()


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)


def http_error(call):
    try:
        call.execute()
    except HttpError as e:
        body = json.loads(e.content)
        return e.resp.status, body["error"]["errors"][0]["reason"]
    return None, None


# Data set up through the API itself.
# Times relative to the clock (a fixed date would age).
def at(days, hour):
    t = datetime.now(timezone.utc).replace(hour=hour, minute=0, second=0, microsecond=0)
    return (t + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


created = []
for i in range(3):
    ev = events.insert(calendarId="primary", body={
        "summary": "python %d" % i,
        "start": {"dateTime": at(i + 1, 10)},
        "end": {"dateTime": at(i + 1, 11)},
    }).execute()
    created.append(ev["id"])
    check(ev["etag"].startswith('"') and ev["status"] == "confirmed", "insert shape")

# Full sync, paged (2 per page), up to the sync token.
seen, request, sync_token, pages = [], events.list(calendarId="primary", maxResults=2, showDeleted=True), None, 0
while request is not None:
    resp = request.execute()
    pages += 1
    seen += [e["id"] for e in resp.get("items", [])]
    check(not ("nextPageToken" in resp and "nextSyncToken" in resp), "both tokens on one page")
    sync_token = resp.get("nextSyncToken", sync_token)
    request = events.list_next(request, resp)
check(sorted(seen) == sorted(created), "full sync ids %r" % seen)
check(pages == 2 and sync_token, "paging and sync token")

# Incremental sync with the token.
events.patch(calendarId="primary", eventId=created[0], body={"summary": "renamed"}).execute()
events.delete(calendarId="primary", eventId=created[1]).execute()
resp = events.list(calendarId="primary", syncToken=sync_token).execute()
items = {e["id"]: e for e in resp["items"]}
check(set(items) == {created[0], created[1]}, "incremental items %r" % list(items))
check(items[created[1]]["status"] == "cancelled" and items[created[0]]["summary"] == "renamed", "incremental content")
check("nextSyncToken" in resp, "incremental sync token")

# 410 after invalidation (through the control API).
primary = svc.calendars().get(calendarId="primary").execute()["id"]
req = urllib.request.Request(
    "%s/emulator/v1/calendars/%s/invalidateSyncTokens" % (ROOT, urllib.request.quote(primary, safe="")),
    data=b"{}", method="POST")
urllib.request.urlopen(req).read()
status, reason = http_error(events.list(calendarId="primary", syncToken=resp["nextSyncToken"]))
check((status, reason) == (410, "fullSyncRequired"), "410 after invalidation: %r %r" % (status, reason))

# Watch and stop.
channel = events.watch(calendarId="primary", body={
    "id": "python-channel-1", "type": "web_hook", "address": "http://127.0.0.1:9/notify", "token": "t0k",
}).execute()
check(channel["kind"] == "api#channel" and channel["resourceId"], "watch response")
check(isinstance(channel["expiration"], str) and int(channel["expiration"]) > 0, "expiration is a ms string")
svc.channels().stop(body={"id": channel["id"], "resourceId": channel["resourceId"]}).execute()
status, reason = http_error(svc.channels().stop(body={"id": channel["id"], "resourceId": channel["resourceId"]}))
check(status == 404, "second stop is 404, got %r" % status)
print("PYTHON CLIENT OK")
