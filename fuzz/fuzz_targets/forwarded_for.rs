//! `X-Forwarded-For`, read for the rate limit's client address: from an untrusted peer the
//! header is ignored; behind trusted proxies the client is an address the header names (or the
//! peer), never anything made up, and never further left than the first entry that is not an
//! address.
//!
//! Input: the first byte picks the peer, the rest is header values separated by `\n`.
#![no_main]

use std::net::IpAddr;

use carrier_ingress::rate_limit::{client_ip, parse_trusted_proxy};
use libfuzzer_sys::fuzz_target;

const PEERS: [&str; 4] = ["127.0.0.1", "10.1.2.3", "::ffff:10.9.9.9", "203.0.113.7"];
const TRUSTED: [&str; 3] = ["127.0.0.0/8", "10.0.0.0/8", "fd00::/8"];

/// What the header may name: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[…]:443`.
fn entry_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|address| address.to_canonical())
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let peer: IpAddr = PEERS[selector as usize % PEERS.len()].parse().unwrap();
    let trusted: Vec<_> = TRUSTED
        .iter()
        .map(|entry| parse_trusted_proxy(entry).unwrap())
        .collect();
    let headers: Vec<&[u8]> = rest.split(|byte| *byte == b'\n').collect();
    let client = client_ip(peer, headers.iter().copied(), &trusted);
    let peer = peer.to_canonical();
    let is_trusted = |address: IpAddr| trusted.iter().any(|network| network.contains(&address));
    if !is_trusted(peer) {
        assert_eq!(client, peer, "an untrusted peer's header is ignored");
        return;
    }
    if client == peer {
        return;
    }
    // Walk the entries from the right as the rule says, and find where the client is.
    let mut found = false;
    'walk: for header in headers.iter().rev() {
        let Ok(header) = std::str::from_utf8(header) else {
            break;
        };
        for entry in header.rsplit(',') {
            if entry.trim().is_empty() {
                continue;
            }
            let Some(address) = entry_address(entry) else {
                break 'walk;
            };
            if address == client {
                found = true;
                break 'walk;
            }
            assert!(
                is_trusted(address),
                "the walk passed the untrusted {address} to reach {client}"
            );
        }
    }
    assert!(found, "{client} is not among the vouched entries of {headers:?}");
});
