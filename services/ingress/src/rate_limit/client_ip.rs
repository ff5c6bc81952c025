//! Which client a request is counted against.
//!
//! The client is the TCP peer. `X-Forwarded-For` is read only when the peer is a trusted proxy
//! (`rate_limit.trusted_proxies`): each trusted proxy appends the address it received the request
//! from, so the list is read from the right, skipping trusted proxies, and the first address that
//! is not one is the client. Everything left of that was written by the client itself and is
//! never believed. An entry that is not an address stops the walk: the client is then the last
//! address a trusted hop vouched for, never something further left.
//!
//! A client's window is keyed by [`window_key`]: an IPv4 address is one client, but an IPv6 host
//! is handed a whole /64 (SLAAC, privacy addresses, one prefix per customer line) and can pick a
//! new address in it for every request, so an IPv6 client counts by its /64 prefix.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// The IPv6 prefix length one client is taken to own.
pub const IPV6_CLIENT_PREFIX_LEN: u8 = 64;

/// What a client's requests are counted under (the `{client}` of its Redis key, and the client
/// named in a 429): an IPv4 address itself (`198.51.100.7`); an IPv6 address's /64 prefix
/// (`2001:db8:1:2::/64`); an IPv4-mapped IPv6 address (`::ffff:198.51.100.7`) as its IPv4
/// address, so a client seen over both socket families has one window.
pub fn window_key(client: IpAddr) -> String {
    match client.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - u32::from(IPV6_CLIENT_PREFIX_LEN));
            let prefix = Ipv6Addr::from(u128::from(v6) & mask);
            format!("{prefix}/{IPV6_CLIENT_PREFIX_LEN}")
        }
    }
}

/// Parses one `trusted_proxies` entry: an address (`10.1.2.3`, `::1`) or a network
/// (`10.0.0.0/8`, `fd00::/8`).
pub fn parse_trusted_proxy(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Ok(IpNet::from(address.to_canonical()));
    }
    entry
        .parse::<IpNet>()
        .map(|network| network.trunc())
        .map_err(|_| format!("'{entry}' is not an IP address or CIDR network"))
}

/// The client address of a request from `peer` carrying the `X-Forwarded-For` header values
/// `forwarded_for` (in the order they appear; several headers count as one joined list).
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted_proxies: &[IpNet],
) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted_proxies.iter().any(|network| network.contains(&address));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let mut nearest_vouched = peer;
    for header in forwarded_for.rev() {
        let Ok(header) = std::str::from_utf8(header) else {
            return nearest_vouched;
        };
        for entry in header.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some(address) = parse_forwarded_entry(entry) else {
                return nearest_vouched;
            };
            if !is_trusted(address) {
                return address;
            }
            nearest_vouched = address;
        }
    }
    nearest_vouched
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(|address| address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(entries: &[&str]) -> Vec<IpNet> {
        entries
            .iter()
            .map(|entry| parse_trusted_proxy(entry).unwrap())
            .collect()
    }

    fn client(peer: &str, headers: &[&str], proxies: &[&str]) -> IpAddr {
        client_ip(
            ip(peer),
            headers.iter().map(|header| header.as_bytes()),
            &trusted(proxies),
        )
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        assert_eq!(client("203.0.113.7", &[], &[]), ip("203.0.113.7"));
        assert_eq!(
            client("203.0.113.7", &["198.51.100.1"], &[]),
            ip("203.0.113.7"),
            "X-Forwarded-For from an untrusted peer is ignored"
        );
    }

    #[test]
    fn a_spoofed_header_from_an_untrusted_peer_is_ignored_even_when_it_names_a_proxy() {
        let proxies = ["10.0.0.0/8"];
        assert_eq!(
            client("203.0.113.7", &["10.0.0.5, 198.51.100.1"], &proxies),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client() {
        let proxies = ["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.2", &["198.51.100.1"], &proxies),
            ip("198.51.100.1")
        );
        // The client claimed to be 1.1.1.1; the trusted proxy appended what it saw.
        assert_eq!(
            client("10.0.0.2", &["1.1.1.1, 198.51.100.1"], &proxies),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_skipped() {
        let proxies = ["10.0.0.0/8", "192.0.2.10"];
        assert_eq!(
            client(
                "10.0.0.2",
                &["6.6.6.6, 198.51.100.1, 192.0.2.10, 10.9.9.9"],
                &proxies
            ),
            ip("198.51.100.1")
        );
        // Several headers are one list, in order.
        assert_eq!(
            client(
                "10.0.0.2",
                &["6.6.6.6, 198.51.100.1", "192.0.2.10", "10.9.9.9"],
                &proxies
            ),
            ip("198.51.100.1")
        );
        // Only trusted proxies in the list: the furthest one is the best we know.
        assert_eq!(
            client("10.0.0.2", &["192.0.2.10, 10.1.1.1"], &proxies),
            ip("192.0.2.10")
        );
        // A trusted peer that sent no header is itself the client.
        assert_eq!(client("10.0.0.2", &[], &proxies), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_addresses_networks_and_ports() {
        let proxies = ["fd00::/8", "::1"];
        assert_eq!(client("::1", &["2001:db8::7"], &proxies), ip("2001:db8::7"));
        assert_eq!(
            client("fd00::2", &["[2001:db8::7]:443, fd12::1"], &proxies),
            ip("2001:db8::7")
        );
        assert_eq!(client("::1", &["[2001:db8::9]"], &proxies), ip("2001:db8::9"));
        assert_eq!(
            client("::1", &["198.51.100.1:5678"], &proxies),
            ip("198.51.100.1")
        );
        // An IPv4-mapped IPv6 peer is the IPv4 address (one window per client, not two).
        assert_eq!(client("::ffff:203.0.113.7", &[], &[]), ip("203.0.113.7"));
        assert_eq!(
            client("::ffff:10.0.0.2", &["::ffff:198.51.100.1"], &["10.0.0.0/8"]),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn garbage_stops_at_the_nearest_vouched_address_and_never_reads_further_left() {
        let proxies = ["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.2", &["198.51.100.1, unknown"], &proxies),
            ip("10.0.0.2"),
            "what the trusted proxy wrote is not an address: the proxy is the client"
        );
        assert_eq!(
            client("10.0.0.2", &["198.51.100.1, not-an-ip, 10.0.0.9"], &proxies),
            ip("10.0.0.9")
        );
        assert_eq!(
            client("10.0.0.2", &["198.51.100.1, 300.1.1.1"], &proxies),
            ip("10.0.0.2")
        );
        // Empty entries carry nothing and are skipped.
        assert_eq!(
            client("10.0.0.2", &["198.51.100.1, , "], &proxies),
            ip("198.51.100.1")
        );
        let not_utf8: &[u8] = &[0xff, 0xfe];
        assert_eq!(
            client_ip(ip("10.0.0.2"), [not_utf8].into_iter(), &trusted(&proxies)),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ipv4_clients_count_per_address_and_ipv6_clients_per_64() {
        assert_eq!(window_key(ip("198.51.100.7")), "198.51.100.7");
        assert_ne!(window_key(ip("198.51.100.7")), window_key(ip("198.51.100.8")));
        // One /64, any interface identifier: one window.
        for address in [
            "2001:db8:1:2::1",
            "2001:db8:1:2::2",
            "2001:db8:1:2:ffff:ffff:ffff:ffff",
            "2001:db8:1:2:a1b2:c3d4:e5f6:789",
        ] {
            assert_eq!(window_key(ip(address)), "2001:db8:1:2::/64", "{address}");
        }
        // The neighbouring /64s are other clients.
        assert_eq!(window_key(ip("2001:db8:1:3::1")), "2001:db8:1:3::/64");
        assert_eq!(window_key(ip("2001:db8:1:1:ffff::1")), "2001:db8:1:1::/64");
        assert_eq!(window_key(ip("::1")), "::/64");
        // IPv4-mapped IPv6 is the IPv4 client, per address, not the mapped /96's first /64.
        assert_eq!(window_key(ip("::ffff:198.51.100.7")), "198.51.100.7");
        assert_ne!(
            window_key(ip("::ffff:198.51.100.7")),
            window_key(ip("::ffff:198.51.100.8"))
        );
    }

    proptest::proptest! {
        /// Two IPv6 addresses share a window exactly when their first 64 bits are equal; an
        /// IPv4 address (also written mapped) shares one only with itself.
        #[test]
        fn windows_are_shared_exactly_within_a_64(a: u128, b: u128, v4a: u32, v4b: u32) {
            let v6 = |bits: u128| IpAddr::V6(Ipv6Addr::from(bits));
            let is_mapped = |bits: u128| v6(bits).to_canonical().is_ipv4();
            // b's interface identifier in a's /64.
            let neighbour = (a & !u128::from(u64::MAX)) | (b & u128::from(u64::MAX));
            if !is_mapped(a) && !is_mapped(b) {
                proptest::prop_assert_eq!(window_key(v6(a)) == window_key(v6(b)), a >> 64 == b >> 64);
            }
            if !is_mapped(a) && !is_mapped(neighbour) {
                proptest::prop_assert_eq!(window_key(v6(a)), window_key(v6(neighbour)));
            }
            let (p, q) = (IpAddr::V4(v4a.into()), IpAddr::V4(v4b.into()));
            proptest::prop_assert_eq!(window_key(p) == window_key(q), v4a == v4b);
            let mapped = IpAddr::V6(std::net::Ipv4Addr::from(v4a).to_ipv6_mapped());
            proptest::prop_assert_eq!(window_key(mapped), window_key(p));
        }
    }

    #[test]
    fn trusted_proxy_entries_parse_addresses_and_networks_and_name_bad_ones() {
        assert_eq!(
            parse_trusted_proxy("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(parse_trusted_proxy(" ::1 ").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_trusted_proxy("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_trusted_proxy("fd00::/8").unwrap().to_string(), "fd00::/8");
        for bad in ["10.0.0.0/33", "proxy.internal", "", "10.0.0/8"] {
            let error = parse_trusted_proxy(bad).unwrap_err();
            assert!(error.contains("not an IP address or CIDR"), "{bad}: {error}");
        }
    }
}
