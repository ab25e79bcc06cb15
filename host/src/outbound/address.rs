//! The check on the address a request is about to connect to, after DNS.
//!
//! The allow-list says which names a guest may ask for; this says which addresses the
//! host will actually connect to. A name is only as trustworthy as whoever controls its
//! DNS: `api.example.com` may resolve to `169.254.169.254` (the instance metadata
//! service, where the host's AWS credentials are) or to `127.0.0.1` tomorrow. So:
//! link-local addresses are never reached, and loopback or private ones only through an
//! entry that names them literally.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The instance metadata service's IPv6 address on EC2 (Nitro).
const EC2_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// What kind of destination an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Reachable through any entry that allows the name.
    Public,
    /// Loopback, private (RFC 1918, CGNAT, unique local), or "this host": reachable only
    /// through an entry that names it literally.
    Private,
    /// Link-local (the metadata service lives there), multicast or broadcast: never.
    Prohibited,
}

/// Classifies `ip`; an IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is judged as
/// the IPv4 address it is.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(ip),
        },
    }
}

/// Whether a request may connect to `ip`, given whether the allow-list entry that
/// matched names its destination literally.
pub fn may_connect(ip: IpAddr, literal_entry: bool) -> bool {
    match classify(ip) {
        AddressClass::Public => true,
        AddressClass::Private => literal_entry,
        AddressClass::Prohibited => false,
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local() || ip.is_multicast() || ip.is_broadcast() {
        AddressClass::Prohibited
    } else if ip.is_loopback()
        || ip.is_private()
        || ip.is_unspecified()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18.0.0/15
        || a >= 240
    // reserved
    {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    if ip == EC2_METADATA_V6
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || ip.is_multicast()
    {
        AddressClass::Prohibited
    } else if ip.is_loopback()
        || ip.is_unspecified()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || ip.to_ipv4().is_some()
    // IPv4-compatible (::a.b.c.d): judged unsafe rather than guessed at
    {
        AddressClass::Private
    } else if first == 0x0064 && ip.segments()[1] == 0xff9b {
        // NAT64 (64:ff9b::/96): the IPv4 address it stands for decides.
        let [.., c, d] = ip.segments();
        let v4 = Ipv4Addr::new((c >> 8) as u8, c as u8, (d >> 8) as u8, d as u8);
        classify_v4(v4)
    } else {
        AddressClass::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> AddressClass {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn link_local_and_the_metadata_service_are_always_refused() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
        ] {
            assert_eq!(class(ip), AddressClass::Prohibited, "{ip}");
            assert!(!may_connect(ip.parse().unwrap(), true), "{ip}");
        }
    }

    #[test]
    fn loopback_and_private_need_a_literal_entry() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "::1",
            "::",
            "fd00::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.1.1",
            "64:ff9b::7f00:1",
        ] {
            assert_eq!(class(ip), AddressClass::Private, "{ip}");
            assert!(may_connect(ip.parse().unwrap(), true), "{ip}");
            assert!(!may_connect(ip.parse().unwrap(), false), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_reachable() {
        for ip in [
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert_eq!(class(ip), AddressClass::Public, "{ip}");
            assert!(may_connect(ip.parse().unwrap(), false), "{ip}");
        }
    }
}
