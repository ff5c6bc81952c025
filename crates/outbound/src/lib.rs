//! Outbound safety: which addresses Carrier may connect to when it dials a URL it did not choose
//! itself — delivery's destination URLs (set by tenants) and the notifier's Slack-compatible
//! alert webhooks (set per organization). Both services use this one policy, configured by the
//! same `[outbound]` settings (`CARRIER_OUTBOUND__*`).
//!
//! Without a check such a URL could make Carrier POST into its own network: the cloud metadata
//! service, a database's HTTP port, an admin API on loopback. Every address dialled passes
//! [`OutboundPolicy::check`]:
//! - names are resolved by [`PolicyResolver`], which drops refused addresses from the answer
//!   before the connector sees them, so the check holds for the address actually dialled and a
//!   name that re-resolves to a private address later (DNS rebinding) is refused then too;
//! - IP-literal URLs (`http://10.0.0.5/`, `http://[::1]/`) never reach a resolver (the connector
//!   dials them directly), so [`OutboundPolicy::check_url`] checks them before the request;
//! - [`client_builder`] is the HTTP client both services start from: the policy's resolver, no
//!   redirects and no proxies (`HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` are ignored: a proxy
//!   would dial on Carrier's behalf, past the check).
//!
//! Refused by default: loopback, private (RFC 1918, unique-local `fc00::/7`), shared address
//! space (CGNAT `100.64.0.0/10`), link-local (`169.254.0.0/16`, `fe80::/10`), unspecified and
//! "this network" (`0.0.0.0/8`, `::`), multicast, reserved and special-purpose (`240.0.0.0/4`,
//! broadcast, IETF protocol assignments `192.0.0.0/24`, benchmarking `198.18.0.0/15`, local-use
//! NAT64 `64:ff9b:1::/48`, Teredo `2001::/32`) and the cloud metadata addresses. IPv4 addresses
//! embedded in IPv6 (mapped `::ffff:a.b.c.d`, translated `::ffff:0:a.b.c.d`, compatible
//! `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the IPv4 address: mapped
//! `::ffff:10.0.0.1` is refused as private, `::ffff:93.184.216.34` allowed as public.
//! The `[outbound]` settings open loopback, private ranges, or listed networks.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use carrier_config::ConfigError;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The `[outbound]` section of delivery (`CARRIER_OUTBOUND__*`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OutboundSettings {
    /// Allow loopback destinations (`127.0.0.0/8`, `::1`). Off in production; the development
    /// stack (`make up`) and the tests turn it on, their receivers listen on 127.0.0.1.
    pub allow_loopback: bool,
    /// Allow private destinations: RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), unique-local
    /// IPv6 (`fc00::/7`) and the CGNAT shared address space (`100.64.0.0/10`). Link-local,
    /// metadata and the other special ranges stay refused.
    pub allow_private: bool,
    /// Networks allowed whatever their class, as CIDR (`10.20.0.0/16`) or single addresses, in a
    /// list or comma-separated (`CARRIER_OUTBOUND__ALLOWED_NETWORKS=10.20.0.0/16,fd12::/64`).
    /// A cloud metadata address is allowed only when listed as a single address (`/32`, `/128`).
    #[serde(deserialize_with = "carrier_config::list_or_comma_separated")]
    pub allowed_networks: Vec<String>,
}

impl OutboundSettings {
    /// The parsed `allowed_networks`; the error names the entry.
    pub fn networks(&self) -> Result<Vec<IpNet>, ConfigError> {
        let mut networks = Vec::with_capacity(self.allowed_networks.len());
        for entry in &self.allowed_networks {
            let network = match entry.parse::<IpAddr>() {
                Ok(address) => IpNet::from(address.to_canonical()),
                Err(_) => entry.parse::<IpNet>().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "outbound.allowed_networks: '{entry}' is neither an IP address nor a CIDR network"
                    ))
                })?,
            };
            networks.push(network);
        }
        Ok(networks)
    }
}

/// What kind of address an IP is, as far as outbound safety cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    Private,
    SharedAddressSpace,
    LinkLocal,
    Metadata,
    Unspecified,
    Multicast,
    Reserved,
}

impl AddressClass {
    /// The words in the refusal text (and the log's `class` field).
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::SharedAddressSpace => "shared address space (CGNAT)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "a cloud metadata address",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
        }
    }

    /// The value of a `class` metric label (`shared_address_space`, `link_local`, ...).
    pub fn metric_label(self) -> &'static str {
        match self {
            AddressClass::SharedAddressSpace => "shared_address_space",
            AddressClass::Metadata => "metadata",
            AddressClass::LinkLocal => "link_local",
            other => other.as_str(),
        }
    }
}

/// Cloud instance metadata services (AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack:
/// 169.254.169.254; AWS ECS task metadata: 169.254.170.2; Alibaba: 100.100.100.200; Oracle's
/// older 192.0.0.192; AWS IPv6 IMDS: fd00:ec2::254).
const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// The class of an address (pure; no configuration involved).
pub fn classify(address: IpAddr) -> AddressClass {
    match address {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(address: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = address.octets();
    if METADATA_V4.contains(&address) {
        AddressClass::Metadata
    } else if a == 0 {
        // 0.0.0.0 and "this network" 0.0.0.0/8: Linux dials 0.0.0.0 as the local host.
        AddressClass::Unspecified
    } else if address.is_loopback() {
        AddressClass::Loopback
    } else if address.is_private() {
        AddressClass::Private
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::SharedAddressSpace
    } else if address.is_link_local() {
        AddressClass::LinkLocal
    } else if address.is_multicast() {
        AddressClass::Multicast
    } else if a >= 240 {
        // 240.0.0.0/4 and the broadcast address.
        AddressClass::Reserved
    } else if a == 192 && b == 0 && c == 0 {
        // IETF protocol assignments 192.0.0.0/24 (RFC 6890: NAT64/DS-Lite, PCP and TURN anycast,
        // Oracle's metadata 192.0.0.192 above); nothing a webhook receiver lives on.
        AddressClass::Reserved
    } else if a == 198 && (b & 0xfe) == 18 {
        // Benchmarking 198.18.0.0/15 (RFC 2544): lab networks, often routed inside a site.
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(address: Ipv6Addr) -> AddressClass {
    if let Some(v4) = embedded_v4(address) {
        return classify_v4(v4);
    }
    let first = address.segments()[0];
    if METADATA_V6.contains(&address) {
        AddressClass::Metadata
    } else if address.is_unspecified() {
        AddressClass::Unspecified
    } else if address.is_loopback() {
        AddressClass::Loopback
    } else if first & 0xfe00 == 0xfc00 {
        // Unique-local fc00::/7.
        AddressClass::Private
    } else if first & 0xffc0 == 0xfec0 {
        // Site-local fec0::/10 (deprecated; private in practice).
        AddressClass::Private
    } else if first & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if first & 0xff00 == 0xff00 {
        AddressClass::Multicast
    } else if address.segments()[..3] == [0x64, 0xff9b, 0x0001] {
        // Local-use NAT64 64:ff9b:1::/48 (RFC 8215): a translator of the local network, which
        // may translate to any IPv4 address (private ones too) at a prefix length of its own,
        // so the embedded address cannot be judged.
        AddressClass::Reserved
    } else if address.segments()[..2] == [0x2001, 0x0000] {
        // Teredo 2001::/32 (RFC 4380): a tunnel through a relay to an obfuscated IPv4 client;
        // no receiver is reached that way, and the relay could be anywhere.
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// The IPv4 address an IPv6 address stands for: mapped `::ffff:a.b.c.d` (`::ffff:0:0/96`),
/// translated `::ffff:0:a.b.c.d` (SIIT, `::ffff:0:0:0/96`), compatible `::a.b.c.d` (deprecated;
/// `::` and `::1` excluded), NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::/48`.
///
/// Mapped addresses are judged as their IPv4 address rather than refused as a block: a dual-stack
/// socket dialling `::ffff:a.b.c.d` reaches `a.b.c.d` itself, so the IPv4 rules are exactly the
/// right ones (`::ffff:10.0.0.1` is private, `::ffff:93.184.216.34` public), and refusing the
/// whole `/96` would only turn away public receivers written that way.
fn embedded_v4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = address.segments();
    let low = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    if let Some(mapped) = address.to_ipv4_mapped() {
        return Some(mapped);
    }
    if segments[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some(low(segments[6], segments[7]));
    }
    if segments[..6] == [0; 6] && (segments[6] != 0 || segments[7] > 1) {
        return Some(low(segments[6], segments[7]));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low(segments[6], segments[7]));
    }
    if segments[0] == 0x2002 {
        return Some(low(segments[1], segments[2]));
    }
    None
}

/// A destination address the policy refuses: the attempt fails with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination address {address} is {}; refused by outbound policy", .class.as_str())]
pub struct Refused {
    pub address: IpAddr,
    pub class: AddressClass,
}

/// The configured policy: which addresses may be dialled.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    allow_loopback: bool,
    allow_private: bool,
    allowed_networks: Vec<IpNet>,
}

impl OutboundPolicy {
    pub fn new(settings: &OutboundSettings) -> Result<Self, ConfigError> {
        Ok(Self {
            allow_loopback: settings.allow_loopback,
            allow_private: settings.allow_private,
            allowed_networks: settings.networks()?,
        })
    }

    /// Whether `address` may be dialled.
    pub fn check(&self, address: IpAddr) -> Result<(), Refused> {
        let address = address.to_canonical();
        let class = classify(address);
        let allowed = match class {
            AddressClass::Public => true,
            AddressClass::Loopback => self.allow_loopback,
            AddressClass::Private | AddressClass::SharedAddressSpace => self.allow_private,
            _ => false,
        };
        if allowed || self.listed(address, class) {
            Ok(())
        } else {
            Err(Refused { address, class })
        }
    }

    fn listed(&self, address: IpAddr, class: AddressClass) -> bool {
        self.allowed_networks.iter().any(|network| {
            network.contains(&address)
                && (class != AddressClass::Metadata || network.prefix_len() == network.max_prefix_len())
        })
    }

    /// Checks a URL whose host is an IP literal (those are dialled without a resolver); names
    /// pass here and are checked by [`PolicyResolver`] on every address they resolve to.
    pub fn check_url(&self, url: &str) -> Result<(), Refused> {
        let Ok(url) = reqwest::Url::parse(url) else {
            return Ok(()); // the request itself reports the bad URL
        };
        match url.host() {
            Some(url::Host::Ipv4(address)) => self.check(IpAddr::V4(address)),
            Some(url::Host::Ipv6(address)) => self.check(IpAddr::V6(address)),
            _ => Ok(()),
        }
    }
}

/// A plain `http://` URL where `https://` is required (production destinations, Slack
/// webhooks): the attempt or the send fails with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plain http:// to {host} refused: production destinations and alert webhooks must use https:// unless the outbound allowances name the address")]
pub struct PlainHttpRefused {
    pub host: String,
}

impl OutboundPolicy {
    /// Whether `url` may be used where patient data travels for real (a production destination,
    /// an alert webhook): `https://` always; `http://` only to an address the operator's
    /// allowances name (a loopback, private or listed address that `allow_loopback`,
    /// `allow_private` or `allowed_networks` lets through, or `localhost` with loopback
    /// or a listed loopback address). A public address is never reached in the clear.
    pub fn check_scheme(&self, url: &str) -> Result<(), PlainHttpRefused> {
        let Ok(url) = reqwest::Url::parse(url) else {
            return Ok(()); // the request itself reports the bad URL
        };
        if url.scheme() != "http" {
            return Ok(());
        }
        let named = match url.host() {
            Some(url::Host::Ipv4(address)) => self.names(IpAddr::V4(address)),
            Some(url::Host::Ipv6(address)) => self.names(IpAddr::V6(address)),
            Some(url::Host::Domain(name)) if name.eq_ignore_ascii_case("localhost") => {
                self.names(IpAddr::from([127, 0, 0, 1]))
                    || self.names(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
            }
            Some(url::Host::Domain(_)) => false,
            None => false,
        };
        if named {
            Ok(())
        } else {
            Err(PlainHttpRefused {
                host: url.host_str().unwrap_or_default().to_string(),
            })
        }
    }

    /// Whether an allowance names `address`: a non-public address the policy lets through, or
    /// one inside `allowed_networks`.
    fn names(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        let class = classify(address);
        (class != AddressClass::Public && self.check(address).is_ok()) || self.listed(address, class)
    }
}

/// The refusal somewhere in an error's source chain (a resolver refusal reaches the caller
/// wrapped in the client's connect errors).
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        cause = current.source();
    }
    None
}

/// The HTTP client's resolver: the system resolver (getaddrinfo), then only the addresses the
/// policy allows. When none is allowed the lookup fails with the first [`Refused`].
pub struct PolicyResolver {
    policy: Arc<OutboundPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<OutboundPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(resolve_allowed(self.policy.clone(), name.as_str().to_string()))
    }
}

/// The start of every HTTP client that dials URLs under `policy`: names resolved through
/// [`PolicyResolver`], redirects never followed (a `Location` could point anywhere, and would be
/// dialled without [`OutboundPolicy::check_url`]), and no proxy whatever the environment says
/// (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`): a proxy would resolve and dial the destination
/// itself, past the policy. Callers add their timeouts and pool settings, and still check
/// IP-literal URLs with [`OutboundPolicy::check_url`] before each request.
pub fn client_builder(policy: Arc<OutboundPolicy>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver::new(policy)))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn resolve_allowed(policy: Arc<OutboundPolicy>, host: String) -> Result<reqwest::dns::Addrs, BoxError> {
    let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
    let (allowed, refused) = filter(&policy, resolved);
    if allowed.is_empty() {
        return Err(match refused {
            Some(refused) => Box::new(refused),
            None => format!("{host} resolved to no address").into(),
        });
    }
    if let Some(refused) = refused {
        tracing::debug!(%host, address = %refused.address, "dropped a refused address of a destination host");
    }
    Ok(Box::new(allowed.into_iter()))
}

/// The allowed addresses, and the first refusal if any address was dropped.
fn filter(
    policy: &OutboundPolicy,
    resolved: impl Iterator<Item = SocketAddr>,
) -> (Vec<SocketAddr>, Option<Refused>) {
    let mut allowed = Vec::new();
    let mut first_refused = None;
    for address in resolved {
        match policy.check(address.ip()) {
            Ok(()) => allowed.push(address),
            Err(refused) => {
                first_refused.get_or_insert(refused);
            }
        }
    }
    (allowed, first_refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_are_classified() {
        let cases = [
            ("8.8.8.8", AddressClass::Public),
            ("93.184.216.34", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("10.0.0.5", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("172.32.0.1", AddressClass::Public),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::SharedAddressSpace),
            ("100.127.255.254", AddressClass::SharedAddressSpace),
            ("100.128.0.1", AddressClass::Public),
            ("169.254.1.1", AddressClass::LinkLocal),
            ("169.254.169.254", AddressClass::Metadata),
            ("169.254.170.2", AddressClass::Metadata),
            ("100.100.100.200", AddressClass::Metadata),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Reserved),
            ("240.0.0.1", AddressClass::Reserved),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Unspecified),
            ("fc00::1", AddressClass::Private),
            ("fd12:3456::1", AddressClass::Private),
            ("fe80::1", AddressClass::LinkLocal),
            ("fd00:ec2::254", AddressClass::Metadata),
            ("ff02::1", AddressClass::Multicast),
            ("2606:4700::1111", AddressClass::Public),
            // IPv4 inside IPv6 is judged as the IPv4 address.
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:10.1.2.3", AddressClass::Private),
            ("::ffff:169.254.169.254", AddressClass::Metadata),
            ("::127.0.0.1", AddressClass::Loopback),
            ("64:ff9b::10.0.0.1", AddressClass::Private),
            ("64:ff9b::8.8.8.8", AddressClass::Public),
            ("2002:a9fe:a9fe::1", AddressClass::Metadata),
            ("2002:0808:0808::1", AddressClass::Public),
            // IETF protocol assignments 192.0.0.0/24, and its neighbours.
            ("192.0.0.0", AddressClass::Reserved),
            ("192.0.0.8", AddressClass::Reserved),
            ("192.0.0.255", AddressClass::Reserved),
            ("192.0.0.192", AddressClass::Metadata),
            ("191.255.255.255", AddressClass::Public),
            ("192.0.1.0", AddressClass::Public),
            // Benchmarking 198.18.0.0/15, and its neighbours.
            ("198.18.0.0", AddressClass::Reserved),
            ("198.18.7.9", AddressClass::Reserved),
            ("198.19.255.255", AddressClass::Reserved),
            ("198.17.255.255", AddressClass::Public),
            ("198.20.0.0", AddressClass::Public),
            // Local-use NAT64 64:ff9b:1::/48, whatever it embeds; the well-known prefix stays
            // judged by its IPv4 address.
            ("64:ff9b:1::1", AddressClass::Reserved),
            ("64:ff9b:1::808:808", AddressClass::Reserved),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", AddressClass::Reserved),
            ("64:ff9b:2::1", AddressClass::Public),
            // Teredo 2001::/32; its neighbours are other unicast.
            ("2001::1", AddressClass::Reserved),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", AddressClass::Reserved),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", AddressClass::Reserved),
            ("2001:200::1", AddressClass::Public),
            ("2001:4860:4860::8888", AddressClass::Public),
            // IPv4-mapped ::ffff:0:0/96 and SIIT-translated ::ffff:0:0:0/96: the IPv4 rules.
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::ffff:93.184.216.34", AddressClass::Public),
            ("::ffff:192.0.0.1", AddressClass::Reserved),
            ("::ffff:198.18.0.1", AddressClass::Reserved),
            ("::ffff:0:10.0.0.1", AddressClass::Private),
            ("::ffff:0:127.0.0.1", AddressClass::Loopback),
            ("::ffff:0:93.184.216.34", AddressClass::Public),
        ];
        for (address, class) in cases {
            assert_eq!(classify(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn the_default_policy_refuses_everything_but_public_addresses() {
        let policy = OutboundPolicy::new(&OutboundSettings::default()).unwrap();
        assert_eq!(policy.check(ip("93.184.216.34")), Ok(()));
        let refused = policy.check(ip("10.0.0.5")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "destination address 10.0.0.5 is private; refused by outbound policy"
        );
        assert_eq!(
            policy.check(ip("127.0.0.1")).unwrap_err().to_string(),
            "destination address 127.0.0.1 is loopback; refused by outbound policy"
        );
        let mapped = policy.check(ip("::ffff:127.0.0.1")).unwrap_err();
        assert_eq!(mapped.address, ip("127.0.0.1"), "reported as the IPv4 address");
        for address in ["169.254.169.254", "fe80::1", "0.0.0.0", "100.64.0.1", "fd00::1"] {
            assert!(policy.check(ip(address)).is_err(), "{address}");
        }
    }

    #[test]
    fn special_purpose_ranges_are_refused_by_default_and_opened_only_by_listing_them() {
        let default = OutboundPolicy::new(&OutboundSettings::default()).unwrap();
        let private = OutboundPolicy::new(&OutboundSettings {
            allow_loopback: true,
            allow_private: true,
            ..Default::default()
        })
        .unwrap();
        for address in [
            "192.0.0.9",
            "198.18.0.1",
            "198.19.1.1",
            "64:ff9b:1::a00:1",
            "2001::5efe:1",
        ] {
            let refused = default.check(ip(address)).unwrap_err();
            assert_eq!(refused.class, AddressClass::Reserved, "{address}");
            assert_eq!(
                refused.to_string(),
                format!("destination address {address} is reserved; refused by outbound policy")
            );
            assert!(
                private.check(ip(address)).is_err(),
                "allow_private does not open {address}"
            );
        }
        let listed = OutboundPolicy::new(&OutboundSettings {
            allowed_networks: vec!["198.18.0.0/15".into(), "2001::/32".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(listed.check(ip("198.19.0.1")), Ok(()));
        assert_eq!(listed.check(ip("2001::1")), Ok(()));
        assert!(listed.check(ip("192.0.0.9")).is_err());
    }

    #[test]
    fn ipv4_mapped_addresses_follow_the_ipv4_rules_and_are_reported_as_ipv4() {
        let default = OutboundPolicy::new(&OutboundSettings::default()).unwrap();
        let refused = default.check(ip("::ffff:10.0.0.1")).unwrap_err();
        assert_eq!(refused.class, AddressClass::Private);
        assert_eq!(refused.address, ip("10.0.0.1"));
        assert_eq!(default.check(ip("::ffff:93.184.216.34")), Ok(()));
        assert_eq!(default.check_url("http://[::ffff:93.184.216.34]/hook"), Ok(()));
        assert!(default.check_url("http://[::ffff:10.0.0.1]/hook").is_err());
        assert!(default.check_url("http://[::ffff:198.18.0.1]/hook").is_err());
        let private = OutboundPolicy::new(&OutboundSettings {
            allow_private: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            private.check(ip("::ffff:10.0.0.1")),
            Ok(()),
            "allow_private applies to it too"
        );
        let listed = OutboundPolicy::new(&OutboundSettings {
            allowed_networks: vec!["10.20.0.0/16".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            listed.check(ip("::ffff:10.20.0.1")),
            Ok(()),
            "an IPv4 listing covers it"
        );
    }

    #[test]
    fn settings_open_loopback_private_or_listed_networks() {
        let loopback = OutboundPolicy::new(&OutboundSettings {
            allow_loopback: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(loopback.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(loopback.check(ip("::1")), Ok(()));
        assert!(loopback.check(ip("10.0.0.5")).is_err());

        let private = OutboundPolicy::new(&OutboundSettings {
            allow_private: true,
            ..Default::default()
        })
        .unwrap();
        for address in ["10.0.0.5", "192.168.0.1", "fd12::1", "100.64.0.1"] {
            assert_eq!(private.check(ip(address)), Ok(()), "{address}");
        }
        for address in [
            "127.0.0.1",
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
        ] {
            assert!(private.check(ip(address)).is_err(), "{address}");
        }

        let listed = OutboundPolicy::new(&OutboundSettings {
            allowed_networks: vec![
                "10.20.0.0/16".into(),
                "169.254.0.0/16".into(),
                "fd00:ec2::254".into(),
            ],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(listed.check(ip("10.20.3.4")), Ok(()));
        assert!(listed.check(ip("10.21.0.1")).is_err());
        assert_eq!(listed.check(ip("169.254.1.1")), Ok(()));
        assert!(
            listed.check(ip("169.254.169.254")).is_err(),
            "a metadata address needs a single-address entry"
        );
        assert_eq!(listed.check(ip("fd00:ec2::254")), Ok(()));
    }

    #[test]
    fn bad_networks_name_the_entry() {
        let error = OutboundPolicy::new(&OutboundSettings {
            allowed_networks: vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("outbound.allowed_networks: '10.0.0.0/40'"),
            "{error}"
        );
    }

    #[test]
    fn ip_literal_urls_are_checked_and_names_left_to_the_resolver() {
        let policy = OutboundPolicy::new(&OutboundSettings::default()).unwrap();
        for url in [
            "http://10.0.0.5/hook",
            "http://127.0.0.1:9000/",
            "http://[::1]:8080/",
            "http://[::ffff:7f00:1]/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "https://169.254.169.254/latest/meta-data/",
        ] {
            assert!(policy.check_url(url).is_err(), "{url}");
        }
        assert_eq!(policy.check_url("https://receiver.example.org/adt"), Ok(()));
        assert_eq!(
            policy.check_url("http://localhost:9000/"),
            Ok(()),
            "checked at resolution"
        );
        assert_eq!(policy.check_url("https://93.184.216.34/"), Ok(()));
    }

    #[test]
    fn resolution_keeps_only_allowed_addresses() {
        let policy = OutboundPolicy::new(&OutboundSettings::default()).unwrap();
        let addresses: Vec<SocketAddr> = vec![
            "10.0.0.5:0".parse().unwrap(),
            "93.184.216.34:0".parse().unwrap(),
            "[::1]:0".parse().unwrap(),
        ];
        let (allowed, refused) = filter(&policy, addresses.into_iter());
        assert_eq!(allowed, vec!["93.184.216.34:0".parse::<SocketAddr>().unwrap()]);
        assert_eq!(refused.unwrap().address, ip("10.0.0.5"));
        let (allowed, refused) = filter(&policy, std::iter::once("[::1]:0".parse().unwrap()));
        assert!(allowed.is_empty());
        assert_eq!(refused.unwrap().class, AddressClass::Loopback);
    }

    /// A real HTTP/1.1 server on 127.0.0.1 answering every request with `status_line`; counts
    /// the connections it accepted.
    struct Server {
        port: u16,
        connections: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Server {
        async fn start(status_line: &'static str) -> Server {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = connections.clone();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut head = [0u8; 8192];
                        let _ = stream.read(&mut head).await;
                        let answer = format!(
                            "HTTP/1.1 {status_line}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                    });
                }
            });
            Server { port, connections }
        }

        fn connections(&self) -> usize {
            self.connections.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn client(settings: OutboundSettings) -> reqwest::Client {
        let policy = Arc::new(OutboundPolicy::new(&settings).unwrap());
        client_builder(policy).build().unwrap()
    }

    #[tokio::test]
    async fn the_client_refuses_a_name_resolving_to_a_refused_address_before_connecting() {
        let server = Server::start("200 OK").await;
        let url = format!("http://localhost:{}/hook", server.port);
        let error = client(OutboundSettings::default())
            .get(&url)
            .send()
            .await
            .expect_err("localhost is loopback");
        let refused = refusal_in(&error).expect("the refusal in the error chain");
        assert_eq!(refused.class, AddressClass::Loopback);
        assert_eq!(server.connections(), 0, "no connection was made");

        let allowed = client(OutboundSettings {
            allow_loopback: true,
            ..Default::default()
        });
        let response = allowed.get(&url).send().await.expect("loopback is allowed");
        assert_eq!(response.status(), 200);
        assert_eq!(server.connections(), 1);
    }

    #[tokio::test]
    async fn the_client_ignores_proxy_variables() {
        // A "proxy" that would answer 502 to anything sent through it. (nextest runs each test
        // in a process of its own, so the variables reach no other test; reqwest reads them
        // when its first client is built.)
        let proxy = Server::start("502 Bad Gateway").await;
        let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
        for variable in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            std::env::set_var(variable, &proxy_url);
        }
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
        let server = Server::start("200 OK").await;
        let response = client(OutboundSettings {
            allow_loopback: true,
            ..Default::default()
        })
        .get(format!("http://localhost:{}/hook", server.port))
        .send()
        .await
        .expect("a direct connection");
        assert_eq!(response.status(), 200, "answered by the server, not the proxy");
        assert_eq!(server.connections(), 1);
        assert_eq!(proxy.connections(), 0, "the proxy was never dialled");
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused() {
        use reqwest::dns::Resolve;
        let policy = Arc::new(OutboundPolicy::new(&OutboundSettings::default()).unwrap());
        let resolver = PolicyResolver::new(policy);
        let error = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(error) => error,
        };
        let refused = refusal_in(error.as_ref()).expect("a refusal");
        assert_eq!(refused.class, AddressClass::Loopback);
    }

    #[test]
    fn plain_http_reaches_only_addresses_the_allowances_name() {
        let strict = OutboundPolicy::new(&OutboundSettings::default()).unwrap();
        assert!(strict.check_scheme("https://receiver.example.org/hook").is_ok());
        for url in [
            "http://receiver.example.org/hook",
            "http://93.184.216.34/hook",
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
        ] {
            let refused = strict.check_scheme(url).unwrap_err();
            assert!(
                refused.to_string().starts_with("plain http:// to "),
                "{url}: {refused}"
            );
        }
        let local = OutboundPolicy::new(&OutboundSettings {
            allow_loopback: true,
            allowed_networks: vec!["203.0.113.0/24".into()],
            ..OutboundSettings::default()
        })
        .unwrap();
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://203.0.113.9/hook",
            "http://[::1]/hook",
        ] {
            assert!(local.check_scheme(url).is_ok(), "{url}");
        }
        for url in [
            "http://10.0.0.5/hook",
            "http://93.184.216.34/hook",
            "http://receiver.example.org/hook",
        ] {
            assert!(local.check_scheme(url).is_err(), "{url}");
        }
    }
}
