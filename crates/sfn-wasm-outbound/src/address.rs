//! The check on the address a request is about to connect to, after DNS.
//!
//! The allow-list says which names a guest may ask for; this says which addresses the
//! host will actually connect to. A name is only as trustworthy as whoever controls its
//! DNS: `api.example.com` may resolve to `169.254.169.254` (the instance metadata
//! service, where the host's AWS credentials are) or to `127.0.0.1` tomorrow. So:
//! link-local addresses are never reached, and loopback or private ones only through an
//! entry that names them literally. An AWS endpoint may resolve to a private address
//! when its activity says so (`[activity.aws] private_endpoints`: VPC interface
//! endpoints with private DNS), never to loopback or link-local.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The instance metadata service's IPv6 address on EC2 (Nitro).
const EC2_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// EKS Pod Identity's credentials agent, IPv6 (its IPv4 twin, 169.254.170.23, is
/// link-local already).
const EKS_POD_IDENTITY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);

/// Which destinations a request may connect to, by what allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// A name the allow-list matched (or an AWS endpoint): public addresses only.
    Public,
    /// An AWS endpoint of an activity whose endpoints are private
    /// (`[activity.aws] private_endpoints`): public and private addresses, never
    /// loopback.
    PrivateNetwork,
    /// An entry that names its destination literally (an IP literal or `localhost`), or
    /// the operator's `endpoint_url`: public, private and loopback addresses.
    Literal,
}

/// What kind of destination an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Reachable through any entry that allows the name.
    Public,
    /// Private (RFC 1918, CGNAT, unique local, IETF protocol assignments): reachable
    /// through an entry that names it literally, or as a private AWS endpoint.
    Private,
    /// Loopback, or "this host" (`0.0.0.0/8`, `::`): reachable only through an entry
    /// that names it literally.
    Loopback,
    /// Link-local (the metadata service lives there), multicast or broadcast: never.
    Prohibited,
}

/// Classifies `ip`; an IPv4 address written as IPv6 (`::ffff:a.b.c.d`, or SIIT's
/// `::ffff:0:a.b.c.d`) is judged as the IPv4 address it is.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(ip),
        },
    }
}

/// Whether a request that `reach` allows may connect to `ip`.
pub fn may_connect(ip: IpAddr, reach: Reach) -> bool {
    matches!(
        (classify(ip), reach),
        (AddressClass::Public, _)
            | (
                AddressClass::Private,
                Reach::PrivateNetwork | Reach::Literal
            )
            | (AddressClass::Loopback, Reach::Literal)
    )
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    let [_, _, c, _] = ip.octets();
    if ip.is_link_local() || ip.is_multicast() || ip.is_broadcast() {
        AddressClass::Prohibited
    } else if ip.is_loopback() || ip.is_unspecified() || a == 0 {
        // 127/8, and "this network" 0/8 (which Linux routes to this host).
        AddressClass::Loopback
    } else if ip.is_private()
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0.0/24
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
    let segments = ip.segments();
    let first = segments[0];
    if ip == EC2_METADATA_V6
        || ip == EKS_POD_IDENTITY_V6
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || ip.is_multicast()
    {
        AddressClass::Prohibited
    } else if segments[..4] == [0, 0, 0, 0] && segments[4] == 0xffff && segments[5] == 0 {
        // SIIT's IPv4-translated form, ::ffff:0:a.b.c.d: the IPv4 address decides.
        let [.., c, d] = segments;
        classify_v4(Ipv4Addr::new(
            (c >> 8) as u8,
            c as u8,
            (d >> 8) as u8,
            d as u8,
        ))
    } else if ip.is_loopback() || ip.is_unspecified() {
        AddressClass::Loopback
    } else if (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
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
            "fd00:ec2::23",
            "::ffff:169.254.169.254",
            "::ffff:0:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
        ] {
            assert_eq!(class(ip), AddressClass::Prohibited, "{ip}");
            for reach in [Reach::Public, Reach::PrivateNetwork, Reach::Literal] {
                assert!(!may_connect(ip.parse().unwrap(), reach), "{ip} {reach:?}");
            }
        }
    }

    #[test]
    fn loopback_needs_a_literal_entry() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:0:127.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert_eq!(class(ip), AddressClass::Loopback, "{ip}");
            assert!(may_connect(ip.parse().unwrap(), Reach::Literal), "{ip}");
            assert!(
                !may_connect(ip.parse().unwrap(), Reach::PrivateNetwork),
                "{ip}"
            );
            assert!(!may_connect(ip.parse().unwrap(), Reach::Public), "{ip}");
        }
    }

    #[test]
    fn private_needs_a_literal_entry_or_a_private_aws_endpoint() {
        for ip in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "192.0.0.1",
            "192.0.0.170",
            "fd00::1",
            "fc00::1",
            "::ffff:10.1.1.1",
            "::ffff:0:10.1.1.1",
            "::ffff:0:192.0.0.8",
        ] {
            assert_eq!(class(ip), AddressClass::Private, "{ip}");
            assert!(may_connect(ip.parse().unwrap(), Reach::Literal), "{ip}");
            assert!(
                may_connect(ip.parse().unwrap(), Reach::PrivateNetwork),
                "{ip}"
            );
            assert!(!may_connect(ip.parse().unwrap(), Reach::Public), "{ip}");
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
            "::ffff:0:8.8.8.8",
            "192.0.2.1",
        ] {
            assert_eq!(class(ip), AddressClass::Public, "{ip}");
            assert!(may_connect(ip.parse().unwrap(), Reach::Public), "{ip}");
        }
    }
}
