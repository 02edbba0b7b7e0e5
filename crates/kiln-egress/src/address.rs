//! The rule no policy lifts, `open` included: the proxy never connects to the host itself, its
//! private networks, link-local (cloud metadata), multicast or the kiln API.
//!
//! The check runs on the socket address the proxy is about to connect to, after DNS resolution,
//! so a public name that resolves to 127.0.0.1 or 169.254.169.254 (DNS rebinding) is refused
//! like the literal. IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`,
//! compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that address.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How often the host's own interface addresses are read again: interfaces come and go (a VPN,
/// DHCP), and reading them costs one netlink round trip.
const LOCAL_REFRESH: Duration = Duration::from_secs(30);

/// Why an address is never reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    Loopback,
    Unspecified,
    Private,
    SharedCgnat,
    UniqueLocal,
    LinkLocal,
    Multicast,
    Broadcast,
    Reserved,
    /// One of the host's own interface addresses.
    HostAddress,
    /// On the server's own deny list (the kiln API's address is always there).
    Denied,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "a loopback address",
            Self::Unspecified => "an unspecified address",
            Self::Private => "a private address (RFC 1918)",
            Self::SharedCgnat => "a carrier-grade NAT address (100.64.0.0/10)",
            Self::UniqueLocal => "a unique local IPv6 address (fc00::/7)",
            Self::LinkLocal => "a link-local address (cloud metadata lives there)",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Reserved => "a reserved address",
            Self::HostAddress => "an address of the kiln host itself",
            Self::Denied => "on this server's list of denied addresses",
        })
    }
}

/// The class of an address under the fixed rules, or `None` for an ordinary public address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (192, 168, _) => AddressClass::Private,
        (172, 16..=31, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::SharedCgnat,
        (169, 254, _) => AddressClass::LinkLocal,
        (224..=239, _, _) => AddressClass::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => AddressClass::Broadcast,
        (240..=255, _, _) => AddressClass::Reserved,
        // IETF protocol assignments, benchmarking. Not the documentation ranges (192.0.2/24,
        // 198.51.100/24, 203.0.113/24): never routed on the Internet, so where a name resolves to
        // one, it is the network's own egress gateway (a TLS-inspecting proxy answering every
        // outside name, as on kiln's own build machine) and refusing it would refuse everything.
        (192, 0, 0) | (198, 18..=19, _) => AddressClass::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    let seg = ip.segments();
    Some(match seg[0] {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_loopback() => AddressClass::Loopback,
        0xfc00..=0xfdff => AddressClass::UniqueLocal,
        0xfe80..=0xfebf => AddressClass::LinkLocal,
        // Deprecated site-local: private by intent.
        0xfec0..=0xfeff => AddressClass::Private,
        0xff00..=0xffff => AddressClass::Multicast,
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address stands for, in the forms a kernel or a NAT64 gateway would
/// route to that IPv4 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let seg = ip.segments();
    let low = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    match seg {
        // IPv4-compatible (deprecated), but not :: and ::1 themselves.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// An entry of the server's deny list: an address (every port) or one socket address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum DeniedAddr {
    Ip(IpAddr),
    Socket(SocketAddr),
}

impl DeniedAddr {
    fn covers(&self, addr: SocketAddr) -> bool {
        match self {
            Self::Ip(ip) => canonical(*ip) == canonical(addr.ip()),
            Self::Socket(s) => canonical(s.ip()) == canonical(addr.ip()) && s.port() == addr.port(),
        }
    }
}

impl FromStr for DeniedAddr {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<SocketAddr>() {
            Ok(sock) => Ok(Self::Socket(sock)),
            Err(_) => s.parse::<IpAddr>().map(Self::Ip),
        }
    }
}

impl From<DeniedAddr> for String {
    fn from(d: DeniedAddr) -> String {
        match d {
            DeniedAddr::Ip(ip) => ip.to_string(),
            DeniedAddr::Socket(s) => s.to_string(),
        }
    }
}

/// Mapped IPv6 compared as its IPv4 address, so a deny entry for 10.0.0.5 covers ::ffff:10.0.0.5.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The fixed classes, the host's own addresses (read from the kernel, refreshed) and the
/// server's deny list.
#[derive(Debug)]
pub struct AddressRules {
    /// The server's deny list: always the kiln API's listen address, plus what `kiln.toml` adds.
    denied: Vec<DeniedAddr>,
    /// The host's interface addresses and when they were read; a std mutex, never held across
    /// an await (refreshing is one synchronous `getifaddrs`).
    local: Mutex<(Instant, Vec<IpAddr>)>,
}

impl AddressRules {
    pub fn new(denied: Vec<DeniedAddr>) -> Self {
        let local = interface_addresses().unwrap_or_else(|e| {
            tracing::warn!("kiln egress: reading this host's addresses failed: {e}");
            Vec::new()
        });
        Self {
            denied,
            local: Mutex::new((Instant::now(), local)),
        }
    }

    /// `Ok` when the proxy may connect to `addr`; `test_allow` lifts the fixed classes for exact
    /// socket addresses (tests' own servers) but never the deny list.
    pub fn check(&self, addr: SocketAddr, test_allow: &[SocketAddr]) -> Result<(), AddressClass> {
        if self.denied.iter().any(|d| d.covers(addr)) {
            return Err(AddressClass::Denied);
        }
        if test_allow.contains(&addr) {
            return Ok(());
        }
        if let Some(class) = classify(addr.ip()) {
            return Err(class);
        }
        if self.is_local(canonical(addr.ip())) {
            return Err(AddressClass::HostAddress);
        }
        Ok(())
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if local.0.elapsed() > LOCAL_REFRESH {
            match interface_addresses() {
                Ok(addrs) => local.1 = addrs,
                // Keep the old list: an address that was the host's a moment ago still is.
                Err(e) => tracing::warn!("kiln egress: reading this host's addresses failed: {e}"),
            }
            local.0 = Instant::now();
        }
        local.1.iter().any(|l| canonical(*l) == ip)
    }
}

/// Every address of every interface of this host (`getifaddrs(3)`).
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points at a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and nothing borrowed from the list outlives this.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<AddressClass> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn fixed_classes() {
        use AddressClass::*;
        let cases = [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("0.0.0.0", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Private)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("100.128.0.1", None),
            ("169.254.169.254", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("224.0.0.1", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.0.8", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            // Documentation ranges: an egress gateway's, where a resolver answers with them.
            ("203.0.113.80", None),
            ("2001:db8::1", None),
            ("1.1.1.1", None),
            ("151.101.0.223", None),
            ("2606:4700::1111", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_are_judged_as_ipv4() {
        use AddressClass::*;
        assert_eq!(class("::ffff:127.0.0.1"), Some(Loopback));
        assert_eq!(class("::ffff:10.0.0.1"), Some(Private));
        assert_eq!(class("::ffff:100.64.1.1"), Some(SharedCgnat));
        assert_eq!(class("::ffff:169.254.169.254"), Some(LinkLocal));
        assert_eq!(class("::ffff:0.0.0.0"), Some(Unspecified));
        assert_eq!(class("::127.0.0.1"), Some(Loopback));
        assert_eq!(class("64:ff9b::a9fe:a9fe"), Some(LinkLocal));
        assert_eq!(class("2002:c0a8:0101::1"), Some(Private));
        assert_eq!(class("::ffff:1.1.1.1"), None);
    }

    #[test]
    fn the_deny_list_wins_over_the_test_allowance_and_covers_mapped_forms() {
        let api: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let rules = AddressRules::new(vec![
            DeniedAddr::Socket(api),
            "203.0.114.7".parse().unwrap(),
        ]);
        assert_eq!(rules.check(api, &[api]), Err(AddressClass::Denied));
        let mapped: SocketAddr = "[::ffff:203.0.114.7]:443".parse().unwrap();
        assert_eq!(rules.check(mapped, &[]), Err(AddressClass::Denied));
        let upstream: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(rules.check(upstream, &[]), Err(AddressClass::Loopback));
        assert_eq!(rules.check(upstream, &[upstream]), Ok(()));
        assert_eq!(rules.check("8.8.4.4:53".parse().unwrap(), &[]), Ok(()));
    }

    #[test]
    fn a_public_address_of_this_host_is_refused_as_the_hosts() {
        let rules = AddressRules::new(Vec::new());
        let own: IpAddr = "198.51.99.7".parse().unwrap();
        rules.local.lock().unwrap().1.push(own);
        assert_eq!(
            rules.check(SocketAddr::new(own, 443), &[]),
            Err(AddressClass::HostAddress)
        );
        let mapped: SocketAddr = "[::ffff:198.51.99.7]:443".parse().unwrap();
        assert_eq!(rules.check(mapped, &[]), Err(AddressClass::HostAddress));
        assert_eq!(rules.check("198.51.99.8:443".parse().unwrap(), &[]), Ok(()));
    }

    #[test]
    fn every_interface_address_of_this_host_is_refused() {
        let addrs = interface_addresses().unwrap();
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
        let rules = AddressRules::new(Vec::new());
        for ip in addrs {
            let err = rules.check(SocketAddr::new(ip, 443), &[]).unwrap_err();
            if classify(ip).is_none() {
                assert_eq!(err, AddressClass::HostAddress, "{ip}");
            }
        }
    }
}
