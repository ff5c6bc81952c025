//! `POST /endpoint`: any body either yields a `Meta` Carrier can route by, or is refused with a
//! 400 that says why. Never a panic, never a 5xx.
#![no_main]

use carrier_ingress::parsers;
use libfuzzer_sys::fuzz_target;

/// What `check_routing_field` guarantees of every routing field: it becomes an HTTP header and a
/// Postgres text value, so 1 to 64 printable ASCII characters.
fn is_routing_field(value: &str) -> bool {
    !value.is_empty() && value.len() <= 64 && value.chars().all(|c| c.is_ascii_graphic() || c == ' ')
}

fuzz_target!(|body: &[u8]| {
    match parsers::data_model_meta(body) {
        Ok(routing) => {
            assert!(is_routing_field(&routing.data_model), "{routing:?}");
            assert!(!routing.data_model.trim().is_empty(), "{routing:?}");
            assert!(is_routing_field(&routing.event_type), "{routing:?}");
            assert!(!routing.event_type.trim().is_empty(), "{routing:?}");
            assert!(routing.destination_ids.len() <= 100, "{routing:?}");
            for (index, id) in routing.destination_ids.iter().enumerate() {
                assert!(is_routing_field(id), "{routing:?}");
                assert!(
                    !routing.destination_ids[..index].contains(id),
                    "named twice: {routing:?}"
                );
            }
        }
        Err(error) => {
            assert_eq!(parsers::status_of(&error), 400, "{}", error.text);
            assert!(!error.text.is_empty());
        }
    }
});
