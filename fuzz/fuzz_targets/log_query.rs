//! `GET /v1/logs` and `POST /v1/logs/retry`: any query string either yields a search within the
//! route's rules (a page size in range, a known status, `since` before `until`, a cursor this
//! route handed out) or is refused with a 400 naming the parameter. A cursor decodes to the
//! position it encodes, and only on the route (page order) that made it.
//!
//! Input: the query string (the bytes after `?`).
#![no_main]

use carrier_ingress::parsers::{self, http, LogCursor, LogRoute};
use libfuzzer_sys::fuzz_target;

const STATUSES: [&str; 4] = ["queued", "delivered", "failed", "cancelled"];

fn check_cursor_round_trip(cursor: LogCursor, route: LogRoute) {
    let other = match route {
        LogRoute::Search => LogRoute::RetryMatching,
        LogRoute::RetryMatching => LogRoute::Search,
    };
    let text = cursor.encode(route);
    assert_eq!(LogCursor::decode(&text, route), Some(cursor), "{text}");
    assert_eq!(
        LogCursor::decode(&text, other),
        None,
        "{text} continues the other order"
    );
}

fuzz_target!(|query: &[u8]| {
    // What hyper would not parse as a request target never reaches the handler.
    let mut target = b"/v1/logs?".to_vec();
    target.extend_from_slice(query);
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    for route in [LogRoute::Search, LogRoute::RetryMatching] {
        match parsers::log_query(&uri, route) {
            Ok(search) => {
                assert!((1..=route.max_limit()).contains(&search.limit), "{search:?}");
                if let Some(status) = search.status {
                    assert!(STATUSES.contains(&status), "{search:?}");
                }
                if let (Some(since), Some(until)) = (search.since_micros, search.until_micros) {
                    assert!(since < until, "{search:?}");
                }
                if let Some(cursor) = search.cursor {
                    check_cursor_round_trip(cursor, route);
                }
            }
            Err(error) => {
                assert_eq!(parsers::status_of(&error), 400, "{}", error.text);
                assert!(!error.text.is_empty());
            }
        }
        // The whole input as a cursor text: whatever decodes round-trips.
        if let Ok(text) = std::str::from_utf8(query) {
            if let Some(cursor) = LogCursor::decode(text, route) {
                check_cursor_round_trip(cursor, route);
            }
        }
    }
});
