//! Source networks of a registration (IPv4 and IPv6), parsed strictly from what a person typed.
//!
//! A form is a legal document sent to J-LIS, so a CIDR is accepted only in the one canonical spelling that every
//! tool reads the same way: no leading zeros (some tools read `010` as octal 8), no zone IDs, no IPv4-mapped IPv6,
//! no host bits, lower-case compressed IPv6. Each refusal has its own variant whose message says what to write
//! instead. Networks that can never be a remote source (loopback, link-local, multicast, …) or that are absurdly
//! broad are refused too; the environment's narrower policy is checked separately by [`check_policy`].

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// Address family of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The longest prefix length of the family: 32 or 128.
    pub fn max_prefix_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// How broad a network may be: a prefix length SMALLER than the minimum of its family is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidrPolicy {
    /// Smallest IPv4 prefix length allowed (24 refuses `192.0.0.0/16`).
    pub min_prefix_length_v4: u8,
    /// Smallest IPv6 prefix length allowed.
    pub min_prefix_length_v6: u8,
}

impl CidrPolicy {
    /// The floor [`parse_cidr`] applies when no environment policy is known: nothing broader than an IPv4 /8 or an
    /// IPv6 /16 is plausible as the source network of one organisation.
    pub const ABSOLUTE_FLOOR: CidrPolicy = CidrPolicy { min_prefix_length_v4: 8, min_prefix_length_v6: 16 };

    /// The minimum prefix length for `family`.
    pub fn min_prefix_length(&self, family: Family) -> u8 {
        match family {
            Family::V4 => self.min_prefix_length_v4,
            Family::V6 => self.min_prefix_length_v6,
        }
    }
}

impl Default for CidrPolicy {
    /// /24 for IPv4 and /48 for IPv6, the usual smallest routed blocks, matching the CRD's defaults.
    fn default() -> Self {
        CidrPolicy { min_prefix_length_v4: 24, min_prefix_length_v6: 48 }
    }
}

/// Why a text is not an acceptable source network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not an IP network at all.
    #[error("{text:?} is not a CIDR ({reason}); write a network such as 192.0.2.0/24 or 2001:db8::/48")]
    NotCidr {
        /// The text as given.
        text: String,
        /// What is wrong, in a few words.
        reason: &'static str,
    },
    /// A bare address without `/n`.
    #[error("{text} has no prefix length; add one, e.g. {suggestion} for this single address")]
    MissingPrefixLength {
        /// The text as given.
        text: String,
        /// The address with /32 or /128.
        suggestion: String,
    },
    /// An IPv4 octet with a leading zero, which some tools read as octal.
    #[error("{text} has a leading zero in an IPv4 octet, which some tools read as octal; write {suggestion}")]
    LeadingZeroOctet {
        /// The text as given.
        text: String,
        /// The same network in decimal without leading zeros.
        suggestion: String,
    },
    /// A prefix length such as `/024`.
    #[error("{text} has a leading zero in its prefix length; write {suggestion}")]
    LeadingZeroPrefixLength {
        /// The text as given.
        text: String,
        /// The same network without the leading zeros.
        suggestion: String,
    },
    /// An IPv6 zone ID such as `%eth0`, which only means something on one host.
    #[error("{text} has an IPv6 zone ID (%{zone}), which only has a meaning on one host; remove it and give a global address")]
    ZoneId {
        /// The text as given.
        text: String,
        /// The zone after `%`.
        zone: String,
    },
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), which hides an IPv4 network.
    #[error(
        "{text} is an IPv4-mapped IPv6 network; write the IPv4 network{} instead",
        suggestion.as_ref().map(|s| format!(" {s}")).unwrap_or_default()
    )]
    Ipv4Mapped {
        /// The text as given.
        text: String,
        /// The IPv4 network it maps, when the prefix length allows one.
        suggestion: Option<String>,
    },
    /// A prefix length larger than 32 (IPv4) or 128 (IPv6).
    #[error("{text}: prefix length /{found} is out of range for {family} (/0 to /{}); a single address is /{}",
        family.max_prefix_len(), family.max_prefix_len())]
    PrefixLengthOutOfRange {
        /// The text as given.
        text: String,
        /// Address family of the text.
        family: Family,
        /// The prefix length as typed (it may not even fit in a number).
        found: String,
    },
    /// Bits set after the prefix, e.g. `192.0.2.1/24`.
    #[error("{text} has host bits set; did you mean {canonical}? (For the single address {address}, write {address}/{}.)",
        if address.contains(':') { 128 } else { 32 })]
    HostBitsSet {
        /// The text as given.
        text: String,
        /// The network with host bits cleared.
        canonical: String,
        /// The address as typed, canonically spelled.
        address: String,
    },
    /// IPv6 spelled other than lower case, without leading zeros and with the longest zero run compressed.
    #[error("{text} is not in canonical IPv6 form; write {canonical} (lower case, no leading zeros, :: for the longest run of zeros)")]
    NonCanonicalIpv6 {
        /// The text as given.
        text: String,
        /// The canonical spelling (RFC 5952).
        canonical: String,
    },
    /// `/0`: every address of the family.
    #[error("{net} would allow every {} address; list the source networks actually used", Family::of(net))]
    AllAddresses {
        /// The network.
        net: IpNet,
    },
    /// Overlaps a range that can never be the source of remote traffic.
    #[error("{net} overlaps {range} ({name}), which can never be a source network; give the public or LGWAN addresses your systems connect from")]
    ForbiddenRange {
        /// The network.
        net: IpNet,
        /// The forbidden range it overlaps.
        range: IpNet,
        /// What the forbidden range is.
        name: &'static str,
    },
    /// Broader than [`CidrPolicy::ABSOLUTE_FLOOR`].
    #[error("{net} is broader than /{floor}, the broadest {family} network ever accepted; list the narrower networks actually used")]
    BroaderThanFloor {
        /// The network.
        net: IpNet,
        /// Its family.
        family: Family,
        /// The floor of that family.
        floor: u8,
    },
    /// Broader than the environment's policy.
    #[error(
        "{net} is broader than this environment allows: {family} networks must be /{min} or narrower; list the /{min} (or narrower) networks actually used"
    )]
    BroaderThanPolicy {
        /// The network.
        net: IpNet,
        /// Its family.
        family: Family,
        /// The policy's minimum prefix length for that family.
        min: u8,
    },
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len))
}

const fn v6(first: u16, last: u16, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, last), len))
}

/// Ranges no source network may overlap, decided against IANA's special-purpose address registries (RFC 6890;
/// iana.org/assignments/iana-ipv4-special-registry and iana-ipv6-special-registry). More specific entries come
/// before the ranges that contain them, so that 255.255.255.255/32 is named "limited broadcast" rather than
/// "reserved".
///
/// Refused because such a range can never be one organisation's own source: it means something only on one host
/// or link (loopback, link-local, unspecified), reaches many hosts (multicast, broadcast), is not routed (reserved,
/// discard-only, benchmarking: RFC 2544 networks exist only in test labs), is shared by a carrier's many customers
/// (100.64.0.0/10, RFC 6598: admitting it admits every subscriber behind the same CGN), or stands for an IPv4
/// address or another network's relay (NAT64 64:ff9b::/96 and 64:ff9b:1::/48, IPv4-compatible ::/96, 6to4
/// 2002::/16 and its relay 192.88.99.0/24, Teredo and the other IETF assignments in 2001::/23 and 192.0.0.0/24):
/// the form must name the real network instead.
///
/// Allowed on purpose: private ranges (10/8, 172.16/12, 192.168/16, fc00::/7), which LGWAN, IP-VPN and leased
/// lines use, and the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), which
/// are never routed (so admitting one admits nobody) and which the examples and users' own test forms use.
const FORBIDDEN: [(IpNet, &str); 20] = [
    (v4(0, 0, 0, 0, 8), "unspecified, \"this network\""),
    (v4(100, 64, 0, 0, 10), "shared address space of carrier-grade NAT (RFC 6598)"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast (deprecated)"),
    (v4(198, 18, 0, 0, 15), "benchmarking (RFC 2544)"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "limited broadcast"),
    (v4(240, 0, 0, 0, 4), "reserved"),
    (v6(0, 0, 128), "unspecified"),
    (v6(0, 1, 128), "loopback"),
    // Typed inside it, an address is refused as an IPv4-mapped spelling; this entry refuses the networks that
    // contain it (::fffe:0:0/95 … ::8000:0:0/81, narrow enough to pass the floor yet clear of :: and ::1).
    (IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96)), "IPv4-mapped"),
    (v6(0, 0, 96), "IPv4-compatible (deprecated, RFC 4291)"),
    (IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(0x0064, 0xff9b, 0, 0, 0, 0, 0, 0), 96)), "NAT64 well-known prefix (an IPv4 address in disguise)"),
    (IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(0x0064, 0xff9b, 1, 0, 0, 0, 0, 0), 48)), "NAT64 local-use prefix"),
    (IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23)), "IETF protocol assignments (Teredo among them)"),
    (v6(0x2002, 0, 16), "6to4 (an IPv4 address in disguise)"),
    (v6(0xfe80, 0, 10), "link-local"),
    (v6(0xff00, 0, 8), "multicast"),
];

/// Parses one source network as a person typed it and refuses everything listed in [`CidrError`] except
/// [`CidrError::BroaderThanPolicy`]: syntax, canonical spelling, `/0`, forbidden ranges, and prefixes broader than
/// [`CidrPolicy::ABSOLUTE_FLOOR`]. An accepted text is exactly `net.to_string()` of the returned network.
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let net = parse_canonical(text)?;
    if net.prefix_len() == 0 {
        return Err(CidrError::AllAddresses { net });
    }
    if let Some((range, name)) = forbidden_overlap(&net) {
        return Err(CidrError::ForbiddenRange { net, range, name });
    }
    let family = Family::of(&net);
    let floor = CidrPolicy::ABSOLUTE_FLOOR.min_prefix_length(family);
    if net.prefix_len() < floor {
        return Err(CidrError::BroaderThanFloor { net, family, floor });
    }
    Ok(net)
}

/// Refuses a network broader than `policy` allows for its family.
pub fn check_policy(net: &IpNet, policy: &CidrPolicy) -> Result<(), CidrError> {
    let family = Family::of(net);
    let min = policy.min_prefix_length(family);
    if net.prefix_len() < min {
        return Err(CidrError::BroaderThanPolicy { net: *net, family, min });
    }
    Ok(())
}

/// Syntax and canonical form, without judging which addresses are allowed.
fn parse_canonical(text: &str) -> Result<IpNet, CidrError> {
    let not_cidr = |reason| CidrError::NotCidr { text: text.to_string(), reason };
    if text.is_empty() {
        return Err(not_cidr("it is empty"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(not_cidr("it contains spaces or control characters"));
    }
    if !text.is_ascii() {
        return Err(not_cidr("it contains non-ASCII characters, such as full-width digits"));
    }
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    if prefix_text.is_some_and(|p| p.contains('/')) {
        return Err(not_cidr("it has more than one '/'"));
    }

    let mut octet_had_leading_zero = false;
    let addr = if addr_text.contains(':') {
        if let Some((_, zone)) = addr_text.split_once('%') {
            return Err(CidrError::ZoneId { text: text.to_string(), zone: zone.to_string() });
        }
        let a: Ipv6Addr = addr_text.parse().map_err(|_| not_cidr("the part before '/' is not an IPv6 address"))?;
        if let Some(mapped) = a.to_ipv4_mapped() {
            // Offer the IPv4 network only when the typed prefix covers the whole ::ffff:0:0/96 part.
            let v4_len = match prefix_text {
                None => Some(32),
                Some(p) => p.parse::<u8>().ok().and_then(|l| l.checked_sub(96)).filter(|l| *l <= 32),
            };
            let suggestion = v4_len.and_then(|l| Ipv4Net::new(mapped, l).ok()).map(|n| n.trunc().to_string());
            return Err(CidrError::Ipv4Mapped { text: text.to_string(), suggestion });
        }
        IpAddr::V6(a)
    } else {
        let (a, leading_zero) = parse_ipv4_strict(addr_text).map_err(not_cidr)?;
        octet_had_leading_zero = leading_zero;
        IpAddr::V4(a)
    };
    let family = if addr.is_ipv4() { Family::V4 } else { Family::V6 };
    let max = family.max_prefix_len();

    let Some(prefix_text) = prefix_text else {
        return Err(CidrError::MissingPrefixLength { text: text.to_string(), suggestion: format!("{addr}/{max}") });
    };
    if prefix_text.is_empty() || !prefix_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_cidr("the prefix length after '/' must be a decimal number such as 24"));
    }
    let stripped = match prefix_text.trim_start_matches('0') {
        "" => "0",
        s => s,
    };
    // `addr` prints without leading zeros (and in canonical IPv6), so it is the right thing to suggest.
    let suggestion = format!("{addr}/{stripped}");
    if octet_had_leading_zero {
        return Err(CidrError::LeadingZeroOctet { text: text.to_string(), suggestion });
    }
    if stripped.len() != prefix_text.len() {
        return Err(CidrError::LeadingZeroPrefixLength { text: text.to_string(), suggestion });
    }
    let out_of_range = || CidrError::PrefixLengthOutOfRange { text: text.to_string(), family, found: prefix_text.to_string() };
    let len = prefix_text.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(out_of_range)?;
    let net = IpNet::new(addr, len).map_err(|_| out_of_range())?;

    if net.addr() != net.network() {
        return Err(CidrError::HostBitsSet { text: text.to_string(), canonical: net.trunc().to_string(), address: addr.to_string() });
    }
    if family == Family::V6 && addr_text != addr.to_string() {
        return Err(CidrError::NonCanonicalIpv6 { text: text.to_string(), canonical: net.to_string() });
    }
    Ok(net)
}

/// Four decimal octets 0-255; returns whether any octet had a leading zero (accepted here, refused by the
/// caller with a suggestion, since `010` is ambiguous rather than meaningless).
fn parse_ipv4_strict(text: &str) -> Result<(Ipv4Addr, bool), &'static str> {
    if text.is_empty() {
        return Err("the address before '/' is missing");
    }
    if !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("the part before '/' is neither an IPv4 nor an IPv6 address");
    }
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    let mut leading_zero = false;
    for slot in &mut octets {
        let part = parts.next().ok_or("an IPv4 address has four numbers separated by dots")?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err("each part of an IPv4 address must be a number from 0 to 255");
        }
        leading_zero |= part.len() > 1 && part.starts_with('0');
        *slot = part.parse().map_err(|_| "each part of an IPv4 address must be a number from 0 to 255")?;
    }
    if parts.next().is_some() {
        return Err("an IPv4 address has four numbers separated by dots");
    }
    Ok((Ipv4Addr::from(octets), leading_zero))
}

/// The forbidden range overlapping `net`: preferably one that contains it (the most specific one), otherwise the
/// first one it contains. CIDR blocks either nest or are disjoint, so these are the only two ways to overlap.
fn forbidden_overlap(net: &IpNet) -> Option<(IpNet, &'static str)> {
    let (family, start, end) = interval(net);
    let overlapping = FORBIDDEN.iter().filter(|(range, _)| {
        let (f, s, e) = interval(range);
        f == family && s <= end && start <= e
    });
    let containing = overlapping.clone().filter(|(range, _)| range.contains(net)).max_by_key(|(r, _)| r.prefix_len());
    containing.or_else(|| overlapping.clone().next()).copied()
}

/// Interval of a network as inclusive bounds: IPv4 within `0..=u32::MAX` tagged [`Family::V4`], IPv6 within
/// `0..=u128::MAX` tagged [`Family::V6`]. Host bits are ignored (`192.0.2.1/24` gives the bounds of 192.0.2.0/24).
pub fn interval(net: &IpNet) -> (Family, u128, u128) {
    match net {
        IpNet::V4(n) => (Family::V4, u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast()))),
        IpNet::V6(n) => (Family::V6, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// How `nets[i]` relates to `nets[j]` in a pair `(i, j, overlap)` returned by [`overlaps_within`] (always i < j).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlap {
    /// Both cover exactly the same addresses.
    Duplicate,
    /// `nets[i]` strictly contains `nets[j]` (e.g. i = 192.0.2.0/24, j = 192.0.2.16/28).
    Contains,
    /// `nets[i]` lies strictly inside `nets[j]`.
    ContainedBy,
}

/// No parent, in [`Forest`]'s packed array.
const ROOT: u32 = u32::MAX;

/// The containment forest of one list of networks (see [`containment_forest`]): for each network, the nearest
/// network of the list that covers it. Two CIDR blocks are either disjoint or nested, so every network covering
/// `nets[i]` is an ancestor of `i` and the pairs of overlapping networks are exactly the (node, ancestor) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forest {
    /// Parent of each network, [`ROOT`] for none; u32 rather than `Option<usize>` to keep the array 4 bytes wide.
    parent: Vec<u32>,
}

impl Forest {
    /// Number of networks (nodes).
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether the list was empty.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// The index of the nearest network covering `nets[i]`: the narrowest network that contains it or duplicates
    /// it; among duplicates (the same addresses), the one with the largest index below `i`; when `i` is the first of
    /// its duplicates, the last (largest index) of the narrowest strictly containing network's duplicates. `None`
    /// when no other network of the list covers `nets[i]` (an earlier duplicate counts, a later one does not).
    pub fn parent(&self, i: usize) -> Option<usize> {
        match self.parent[i] {
            ROOT => None,
            p => Some(p as usize),
        }
    }

    /// The networks covering `nets[i]`, nearest first: every network that contains `nets[i]`, and its duplicates
    /// with a smaller index (a duplicate with a larger index has `i` among its own ancestors instead).
    pub fn ancestors(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.parent(i), |&p| self.parent(p))
    }

    /// Whether any network of the list is covered by another one (some network has a parent).
    pub fn has_overlaps(&self) -> bool {
        self.parent.iter().any(|&p| p != ROOT)
    }

    /// Every overlapping pair as [`overlaps_within`] reports them, `nets` being the list this forest was built from:
    /// O(k log k) for k pairs, found by walking each network's ancestors.
    pub fn overlapping_pairs(&self, nets: &[IpNet]) -> Vec<(usize, usize, Overlap)> {
        assert_eq!(nets.len(), self.len(), "the forest of another list");
        let mut found = Vec::new();
        for (x, net) in nets.iter().enumerate() {
            for y in self.ancestors(x) {
                // An ancestor covers x: with the same prefix length it covers the same addresses.
                found.push(match (nets[y].prefix_len() == net.prefix_len(), y < x) {
                    (true, _) => (y.min(x), y.max(x), Overlap::Duplicate),
                    (false, true) => (y, x, Overlap::Contains),
                    (false, false) => (x, y, Overlap::ContainedBy),
                });
            }
        }
        found.sort_unstable_by_key(|&(i, j, _)| (i, j));
        found
    }
}

/// Bits of the index in a packed IPv4 key (see [`ContainmentKeys`]): lists of up to 2^26 (67 million) networks.
pub const V4_INDEX_BITS: u32 = 26;

/// Digit of [`radix_sort_from_bit`]: 11 bits, 2,048 counters of 4 bytes that stay in the L1 cache.
const DIGIT: u32 = 11;
const BUCKETS: usize = 1 << DIGIT;

/// The packed sort keys [`containment_forest`] sorts, public so that a benchmark can time a bare sort of the same
/// keys. Sorting either list in ascending order puts each network right after the networks that cover it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainmentKeys {
    /// IPv4 networks as one u64 each: network address (32 bits) | prefix length (6 bits) | index (26 bits), so
    /// that the order is (start, prefix length, index): a wider network before the narrower ones it contains.
    /// Empty when the list is longer than 2^26 (then IPv4 goes to `wide_v4`).
    pub v4: Vec<u64>,
    /// IPv4 networks of lists too long for `v4`, as (network address, prefix length << 32 | index).
    pub wide_v4: Vec<(u128, u64)>,
    /// IPv6 networks as (network address, prefix length << 32 | index).
    pub v6: Vec<(u128, u64)>,
}

impl ContainmentKeys {
    /// The keys of `nets` (host bits ignored, as in [`interval`]), in index order.
    pub fn of(nets: &[IpNet]) -> ContainmentKeys {
        Self::with_counts(nets, |_| {})
    }

    /// [`ContainmentKeys::of`], calling `count` with each IPv4 key as it is made (the radix sort's counting pass,
    /// done while the key is in a register rather than in a pass of its own).
    fn with_counts(nets: &[IpNet], mut count: impl FnMut(u64)) -> ContainmentKeys {
        assert!(nets.len() < ROOT as usize, "more than 2^32 - 1 networks");
        let narrow = nets.len() <= 1 << V4_INDEX_BITS;
        let mut keys = ContainmentKeys::default();
        if narrow {
            keys.v4.reserve(nets.len());
        }
        for (index, net) in nets.iter().enumerate() {
            let packed_len_index = |len: u8| u64::from(len) << 32 | index as u64;
            match net {
                IpNet::V4(n) if narrow => {
                    let key = u64::from(u32::from(n.network())) << 32 | u64::from(n.prefix_len()) << V4_INDEX_BITS | index as u64;
                    count(key);
                    keys.v4.push(key);
                }
                IpNet::V4(n) => keys.wide_v4.push((u128::from(u32::from(n.network())), packed_len_index(n.prefix_len()))),
                IpNet::V6(n) => keys.v6.push((u128::from(n.network()), packed_len_index(n.prefix_len()))),
            }
        }
        keys
    }
}

/// Sorts `keys` in ascending order of their bits `low_bit..64` and keeps keys equal there in their order: a
/// least-significant-digit radix sort with 11-bit digits, one pass over the keys per digit (plus one to count),
/// skipping digits that are the same in every key. O(n) where a comparison sort is O(n log n).
pub fn radix_sort_from_bit(keys: &mut Vec<u64>, low_bit: u32) {
    if keys.len() <= SMALL {
        keys.sort_by_key(|k| k >> low_bit); // stable, like the radix sort
        return;
    }
    let mut counts = RadixCounts::new(low_bit);
    keys.iter().for_each(|&k| counts.add(k));
    counts.sort(keys);
}

/// Up to this many keys, [`radix_sort_from_bit`] uses the standard library's sort.
const SMALL: usize = 1024;

/// The counts of each digit value, per pass, of a [`radix_sort_from_bit`].
struct RadixCounts {
    low_bit: u32,
    counts: Vec<[u32; BUCKETS]>,
}

impl RadixCounts {
    fn new(low_bit: u32) -> RadixCounts {
        RadixCounts { low_bit, counts: vec![[0; BUCKETS]; (64 - low_bit).div_ceil(DIGIT) as usize] }
    }

    fn add(&mut self, key: u64) {
        for (p, c) in self.counts.iter_mut().enumerate() {
            c[((key >> (self.low_bit + p as u32 * DIGIT)) as usize) & (BUCKETS - 1)] += 1;
        }
    }

    /// The passes, `keys` being the keys counted.
    fn sort(mut self, keys: &mut Vec<u64>) {
        let n = keys.len();
        let mut buffer = vec![0u64; n];
        for (p, c) in self.counts.iter_mut().enumerate() {
            if c.iter().any(|&count| count as usize == n) {
                continue; // one digit value in every key: this pass would not move anything
            }
            let mut sum = 0u32;
            for count in c.iter_mut() {
                (*count, sum) = (sum, sum + *count);
            }
            let shift = self.low_bit + p as u32 * DIGIT;
            for &k in keys.iter() {
                let slot = &mut c[((k >> shift) as usize) & (BUCKETS - 1)];
                buffer[*slot as usize] = k;
                *slot += 1;
            }
            std::mem::swap(keys, &mut buffer);
        }
    }
}

/// The containment forest of `nets`: for each network, the nearest other network of the list that covers it (see
/// [`Forest::parent`] for the exact rule among duplicates). Networks are compared by the addresses they cover (see
/// [`interval`]); IPv4 and IPv6 never overlap.
///
/// O(n) for IPv4 lists, O(n log n) for IPv6, and nothing per overlapping pair: sorted by (start, prefix length,
/// index), a network comes right after every network that covers it, and a sweep with a stack of the networks
/// still open (each containing the one above it) finds its parent on top of the stack once those ending before its
/// start are popped. Replaces reporting every pair, which grew 35.7× from 100k to 1M random prefixes (issue #22
/// P2); [`Forest::overlapping_pairs`] still gives them.
///
/// IPv4 keys are packed into a u64 each ([`ContainmentKeys::v4`]) and radix-sorted on the 32 bits of the start
/// only, three passes instead of the four that the 38 bits of (start, prefix length) would take, counted while the
/// keys are made: the few runs of networks with the same start are put in order of the whole key by the sweep,
/// which meets them one after the other.
pub fn containment_forest(nets: &[IpNet]) -> Forest {
    let mut counts = RadixCounts::new(32);
    let mut keys = ContainmentKeys::with_counts(nets, |k| counts.add(k));
    if keys.v4.len() <= SMALL {
        keys.v4.sort_unstable();
    } else {
        counts.sort(&mut keys.v4);
    }
    keys.wide_v4.sort_unstable();
    keys.v6.sort_unstable();

    let mut parent = vec![ROOT; nets.len()];
    let index_mask = (1u64 << V4_INDEX_BITS) - 1;
    let mut open = OpenNets::<u64>::default();
    let v4 = &mut keys.v4;
    let mut run = 0;
    while run < v4.len() {
        let start = v4[run] >> 32;
        let run_end = run + v4[run..].iter().take_while(|&&k| k >> 32 == start).count();
        if run_end - run > 1 {
            v4[run..run_end].sort_unstable(); // same start: by prefix length, then index
        }
        open.close_before(start);
        for &key in &v4[run..run_end] {
            let len = (key >> V4_INDEX_BITS) & 0x3f;
            let index = (key & index_mask) as u32;
            parent[index as usize] = open.enter(start + ((1u64 << (32 - len)) - 1), index);
        }
        run = run_end;
    }
    for (keys, bits) in [(&keys.wide_v4, 32u32), (&keys.v6, 128)] {
        let mut open = OpenNets::<u128>::default();
        for &(start, len_index) in keys {
            let (len, index) = ((len_index >> 32) as u32, len_index as u32);
            open.close_before(start);
            parent[index as usize] = open.enter(start | u128::MAX.checked_shr(128 - bits + len).unwrap_or(0), index);
        }
    }
    Forest { parent }
}

/// The sweep's stack of open networks, as (last address, index), each containing the one above it. A network with
/// the same addresses as the top replaces it rather than going on top (it is the nearest cover of whatever comes
/// next, and both close together), so the stack holds networks of distinct prefix lengths: at most 33 for IPv4 and
/// 129 for IPv6, in a fixed array whose depth the compiler keeps in a register.
struct OpenNets<A> {
    stack: [(A, u32); 129],
    depth: usize,
}

impl<A: Copy + Default + Ord> Default for OpenNets<A> {
    fn default() -> Self {
        OpenNets { stack: [(A::default(), ROOT); 129], depth: 0 }
    }
}

impl<A: Copy + Default + Ord> OpenNets<A> {
    /// Closes the networks ending before `start`: in address order, none of them can contain what comes next.
    fn close_before(&mut self, start: A) {
        while self.depth > 0 && self.stack[self.depth - 1].0 < start {
            self.depth -= 1;
        }
    }

    /// Opens the network ending at `end` (starting at or after every open one, and not before the top's start), and
    /// returns its parent: the top, or [`ROOT`].
    fn enter(&mut self, end: A, index: u32) -> u32 {
        let Some(&(top_end, top)) = self.depth.checked_sub(1).map(|d| &self.stack[d]) else {
            self.stack[0] = (end, index);
            self.depth = 1;
            return ROOT;
        };
        // Open networks contain the new one, so an equal end means the same network (a duplicate).
        if top_end == end {
            self.stack[self.depth - 1].1 = index;
        } else {
            self.stack[self.depth] = (end, index);
            self.depth += 1;
        }
        top
    }
}

/// Duplicates and overlaps among one list, as `(i, j, kind)` with `i < j` indexes into `nets`, each overlapping
/// pair once, sorted by `(i, j)`. Networks are compared by the addresses they cover (see [`interval`]).
///
/// O(n log n + k log k) for k reported pairs: the [`containment_forest`], then each network's ancestors. For the
/// callers that must name every pair to a person; whoever only needs to know what covers what should walk the
/// forest instead, as the number of pairs can grow much faster than n (a /16 among a million random prefixes
/// contains dozens of them).
pub fn overlaps_within(nets: &[IpNet]) -> Vec<(usize, usize, Overlap)> {
    containment_forest(nets).overlapping_pairs(nets)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The variant's name, read from its Debug form (`NotCidr { .. }` → `NotCidr`).
    fn kind(e: &CidrError) -> String {
        format!("{e:?}").split([' ', '{', '(']).next().unwrap_or_default().to_string()
    }

    /// (input, expected variant, a fragment the message must contain)
    const REFUSED: &[(&str, &str, &str)] = &[
        ("", "NotCidr", "it is empty"),
        ("hello", "NotCidr", "neither an IPv4 nor an IPv6 address"),
        ("/24", "NotCidr", "the address before '/' is missing"),
        (" 192.0.2.0/24", "NotCidr", "spaces"),
        ("192.0.2.0/24\n", "NotCidr", "spaces"),
        ("１９２.0.2.0/24", "NotCidr", "full-width"),
        ("192.0.2/24", "NotCidr", "four numbers"),
        ("192.0.2.0.0/24", "NotCidr", "four numbers"),
        ("192.0.2.256/32", "NotCidr", "0 to 255"),
        ("192.0.2.0/", "NotCidr", "decimal number"),
        ("192.0.2.0/+24", "NotCidr", "decimal number"),
        ("192.0.2.0/24/24", "NotCidr", "more than one '/'"),
        ("2001:db8:::/48", "NotCidr", "not an IPv6 address"),
        ("192.0.2.1", "MissingPrefixLength", "add one, e.g. 192.0.2.1/32"),
        ("2001:db8::1", "MissingPrefixLength", "e.g. 2001:db8::1/128"),
        ("010.0.0.0/8", "LeadingZeroOctet", "write 10.0.0.0/8"),
        ("192.0.02.0/024", "LeadingZeroOctet", "write 192.0.2.0/24"),
        ("192.0.2.0/024", "LeadingZeroPrefixLength", "write 192.0.2.0/24"),
        ("2001:db8::/048", "LeadingZeroPrefixLength", "write 2001:db8::/48"),
        ("fe80::1%eth0/64", "ZoneId", "(%eth0)"),
        ("fe80::1%2", "ZoneId", "remove it"),
        ("::ffff:192.0.2.0/120", "Ipv4Mapped", "write the IPv4 network 192.0.2.0/24 instead"),
        ("::ffff:c000:200/120", "Ipv4Mapped", "192.0.2.0/24"),
        ("::ffff:192.0.2.1", "Ipv4Mapped", "192.0.2.1/32"),
        ("192.0.2.0/33", "PrefixLengthOutOfRange", "/33 is out of range for IPv4 (/0 to /32)"),
        ("192.0.2.0/4294967296", "PrefixLengthOutOfRange", "IPv4"),
        ("2001:db8::/129", "PrefixLengthOutOfRange", "IPv6 (/0 to /128)"),
        ("192.0.2.1/24", "HostBitsSet", "192.0.2.1/24 has host bits set; did you mean 192.0.2.0/24?"),
        ("192.0.2.1/24", "HostBitsSet", "write 192.0.2.1/32"),
        ("2001:db8::1/64", "HostBitsSet", "did you mean 2001:db8::/64?"),
        ("2001:DB8:0::1/48", "HostBitsSet", "did you mean 2001:db8::/48?"),
        ("2001:DB8::/32", "NonCanonicalIpv6", "write 2001:db8::/32"),
        ("2001:0db8::/32", "NonCanonicalIpv6", "write 2001:db8::/32"),
        ("2001:db8:0:0:0:0:0:0/32", "NonCanonicalIpv6", "write 2001:db8::/32"),
        ("2001:db8::1:0:0:0/80", "NonCanonicalIpv6", "write 2001:db8:0:0:1::/80"),
        ("0.0.0.0/0", "AllAddresses", "every IPv4 address"),
        ("::/0", "AllAddresses", "every IPv6 address"),
        ("0.0.0.0/8", "ForbiddenRange", "0.0.0.0/8 (unspecified, \"this network\")"),
        ("0.0.0.0/32", "ForbiddenRange", "unspecified"),
        ("127.0.0.1/32", "ForbiddenRange", "127.0.0.0/8 (loopback)"),
        ("126.0.0.0/7", "ForbiddenRange", "loopback"),
        ("169.254.10.0/24", "ForbiddenRange", "169.254.0.0/16 (link-local)"),
        ("239.1.2.0/24", "ForbiddenRange", "224.0.0.0/4 (multicast)"),
        ("255.255.255.255/32", "ForbiddenRange", "255.255.255.255/32 (limited broadcast)"),
        ("250.1.0.0/16", "ForbiddenRange", "240.0.0.0/4 (reserved)"),
        ("::/128", "ForbiddenRange", "::/128 (unspecified)"),
        ("::1/128", "ForbiddenRange", "::1/128 (loopback)"),
        ("::/16", "ForbiddenRange", "::/128 (unspecified)"),
        // Found writing the `cidr` fuzz target's property: these contain every IPv4-mapped address, yet were accepted.
        ("::fffe:0:0/95", "ForbiddenRange", "::ffff:0.0.0.0/96 (IPv4-mapped)"),
        ("::8000:0:0/81", "ForbiddenRange", "IPv4-mapped"),
        ("fe80::/64", "ForbiddenRange", "fe80::/10 (link-local)"),
        ("fe80::/9", "ForbiddenRange", "fe80::/10 (link-local)"),
        ("ff02::/16", "ForbiddenRange", "ff00::/8 (multicast)"),
        ("8.0.0.0/7", "BroaderThanFloor", "8.0.0.0/7 is broader than /8, the broadest IPv4 network"),
        ("2400::/15", "BroaderThanFloor", "broader than /16, the broadest IPv6 network"),
        // Special-purpose ranges (issue 17): never one organisation's own source.
        ("100.64.0.0/24", "ForbiddenRange", "100.64.0.0/10 (shared address space of carrier-grade NAT (RFC 6598))"),
        ("100.0.0.0/8", "ForbiddenRange", "shared address space"),
        ("198.18.0.0/24", "ForbiddenRange", "benchmarking"),
        ("198.19.255.0/24", "ForbiddenRange", "benchmarking"),
        ("192.0.0.0/29", "ForbiddenRange", "IETF protocol assignments"),
        ("192.88.99.0/24", "ForbiddenRange", "6to4 relay"),
        ("64:ff9b::c000:200/120", "ForbiddenRange", "64:ff9b::/96 (NAT64 well-known prefix"),
        ("64:ff9b:1::/48", "ForbiddenRange", "NAT64 local-use"),
        ("::c000:200/120", "ForbiddenRange", "::/96 (IPv4-compatible"),
        ("2001::/32", "ForbiddenRange", "Teredo"),
        ("2002:c000:200::/48", "ForbiddenRange", "6to4"),
    ];

    #[test]
    fn refusals_have_their_own_variant_and_say_what_to_write() {
        for &(text, expected, fragment) in REFUSED {
            let err = parse_cidr(text).expect_err(text);
            assert_eq!(kind(&err), expected, "{text:?}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(fragment), "{text:?}: {msg:?} lacks {fragment:?}");
        }
    }

    #[test]
    fn accepted_examples() {
        for text in [
            "192.0.2.0/28",
            "2001:db8:10::/56",
            "203.0.113.7/32",
            "10.20.0.0/16",
            "10.0.0.0/8",
            "2001:db8::1/128",
            "2400::/16",
            "fd12:3456::/32",
            "223.255.255.0/24",
            "2001:db8:0:0:1::/80",
        ] {
            let net = parse_cidr(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(net.to_string(), text);
        }
    }

    #[test]
    fn policy_refuses_broader_prefixes() {
        let policy = CidrPolicy::default();
        assert_eq!(policy, CidrPolicy { min_prefix_length_v4: 24, min_prefix_length_v6: 48 });
        let broad = parse_cidr("203.0.0.0/16").unwrap();
        let err = check_policy(&broad, &policy).unwrap_err();
        assert_eq!(err, CidrError::BroaderThanPolicy { net: broad, family: Family::V4, min: 24 });
        assert!(err.to_string().contains("IPv4 networks must be /24 or narrower"), "{err}");
        assert!(check_policy(&parse_cidr("192.0.2.0/24").unwrap(), &policy).is_ok());
        assert!(check_policy(&parse_cidr("192.0.2.7/32").unwrap(), &policy).is_ok());
        assert!(check_policy(&parse_cidr("2001:db8::/32").unwrap(), &policy).is_err());
        assert!(check_policy(&parse_cidr("2001:db8:10::/48").unwrap(), &policy).is_ok());
        let floor = CidrPolicy::ABSOLUTE_FLOOR;
        assert!(check_policy(&parse_cidr("10.0.0.0/8").unwrap(), &floor).is_ok());
        assert!(check_policy(&parse_cidr("2400::/16").unwrap(), &floor).is_ok());
    }

    #[test]
    fn intervals() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(interval(&net("192.0.2.0/24")), (Family::V4, 0xc000_0200, 0xc000_02ff));
        assert_eq!(interval(&net("192.0.2.1/24")), (Family::V4, 0xc000_0200, 0xc000_02ff));
        assert_eq!(interval(&net("::/0")), (Family::V6, 0, u128::MAX));
        assert_eq!(interval(&net("0.0.0.0/0")), (Family::V4, 0, u128::from(u32::MAX)));
    }

    #[test]
    fn overlaps_convention() {
        let nets: Vec<IpNet> = ["192.0.2.0/28", "192.0.2.0/24", "2001:db8::/48", "192.0.2.0/28", "10.0.0.0/8", "2001:db8::/56", "::/0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            overlaps_within(&nets),
            vec![
                (0, 1, Overlap::ContainedBy),
                (0, 3, Overlap::Duplicate),
                (1, 3, Overlap::Contains),
                (2, 5, Overlap::Contains),
                (2, 6, Overlap::ContainedBy),
                (5, 6, Overlap::ContainedBy),
            ]
        );
        assert!(overlaps_within(&[]).is_empty());
    }

    #[test]
    fn overlaps_scale_beyond_quadratic() {
        // 200,000 disjoint /32s plus one /8 over all of them: a pairwise check would need 2·10¹⁰ comparisons.
        let mut nets: Vec<IpNet> = (0..200_000u32).map(|i| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(0x0a00_0000 + i * 7), 32))).collect();
        nets.push(v4(10, 0, 0, 0, 8));
        let found = overlaps_within(&nets);
        assert_eq!(found.len(), 200_000);
        assert!(found.iter().all(|&(_, j, ref k)| j == 200_000 && *k == Overlap::ContainedBy));
    }

    /// The forest's parent by its definition: among the other networks covering `nets[i]` (containing it, or the
    /// same addresses at a smaller index), the narrowest, then the largest index.
    fn naive_parent(nets: &[IpNet], i: usize) -> Option<usize> {
        let me = nets[i].trunc();
        (0..nets.len()).filter(|&j| j != i && nets[j].trunc().contains(&me) && (nets[j].trunc() != me || j < i)).max_by_key(|&j| (nets[j].prefix_len(), j))
    }

    fn parents(forest: &Forest) -> Vec<Option<usize>> {
        (0..forest.len()).map(|i| forest.parent(i)).collect()
    }

    #[test]
    fn forest_convention() {
        let nets: Vec<IpNet> = [
            "192.0.2.0/28",  // 0: inside the /24 listed at 1 and 7: the last of those copies
            "192.0.2.0/24",  // 1
            "2001:db8::/48", // 2: inside 6 (::/0), contains 5
            "192.0.2.0/28",  // 3: the same as 0, listed earlier: parent 0
            "10.0.0.0/8",    // 4: nothing covers it
            "2001:db8::/56", // 5
            "::/0",          // 6
            "192.0.2.1/24",  // 7: host bits ignored; a duplicate of 1
            "0.0.0.0/0",     // 8: covers every IPv4 network, no IPv6 one
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let forest = containment_forest(&nets);
        assert_eq!(parents(&forest), vec![Some(7), Some(8), Some(6), Some(0), Some(8), Some(2), None, Some(1), None]);
        assert_eq!(forest.ancestors(3).collect::<Vec<_>>(), vec![0, 7, 1, 8]);
        assert!(forest.has_overlaps());
        assert!(!containment_forest(&nets[4..5]).has_overlaps());
        assert!(containment_forest(&[]).is_empty());
        let pairs = forest.overlapping_pairs(&nets);
        assert_eq!(pairs, naive(&nets));
        assert!(pairs.contains(&(1, 7, Overlap::Duplicate)) && pairs.contains(&(0, 8, Overlap::ContainedBy)));
    }

    #[test]
    fn forest_of_nested_chains_and_host_routes() {
        // /32 single addresses (end = start) and a /0 (end = the family's last address) at both ends of a chain.
        let nets: Vec<IpNet> = ["255.255.255.255/32", "0.0.0.0/0", "255.255.255.0/24", "::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "0.0.0.0/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(parents(&containment_forest(&nets)), vec![Some(2), None, Some(1), None, Some(3), Some(1)]);
    }

    #[test]
    fn forest_is_linear_in_the_input_not_in_the_pairs() {
        // 200,000 /32s inside one /8 and 1,000 copies of the /8: 2·10⁸ pairs, yet one parent each.
        let mut nets: Vec<IpNet> = (0..200_000u32).map(|i| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(0x0a00_0000 + i * 7), 32))).collect();
        nets.extend(std::iter::repeat_n(v4(10, 0, 0, 0, 8), 1_000));
        let forest = containment_forest(&nets);
        assert!((0..200_000).all(|i| forest.parent(i) == Some(200_999)));
        assert_eq!(forest.parent(200_000), None);
        assert!((200_001..201_000).all(|i| forest.parent(i) == Some(i - 1)));
    }

    #[test]
    fn radix_sort_orders_by_the_high_bits_and_keeps_ties_in_order() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for n in [0, 1, 1_000, 5_000] {
            // High bits from a small range (many ties), low 26 bits the input position.
            let keys: Vec<u64> = (0..n as u64).map(|i| (next() % 300) << 40 | (next() & 0xff) << 26 | i).collect();
            let mut expected = keys.clone();
            expected.sort_by_key(|k| k >> 26);
            let mut sorted = keys;
            radix_sort_from_bit(&mut sorted, 26);
            assert_eq!(sorted, expected, "n = {n}");
        }
    }

    fn naive(nets: &[IpNet]) -> Vec<(usize, usize, Overlap)> {
        let mut out = Vec::new();
        for i in 0..nets.len() {
            for j in i + 1..nets.len() {
                let (a, b) = (nets[i].trunc(), nets[j].trunc());
                if a == b {
                    out.push((i, j, Overlap::Duplicate));
                } else if a.contains(&b) {
                    out.push((i, j, Overlap::Contains));
                } else if b.contains(&a) {
                    out.push((i, j, Overlap::ContainedBy));
                }
            }
        }
        out
    }

    fn any_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 8u8..=32).prop_map(|(a, l)| IpNet::V4(Ipv4Net::new_assert(a.into(), l).trunc())),
            (any::<u128>(), 16u8..=128).prop_map(|(a, l)| IpNet::V6(Ipv6Net::new_assert(a.into(), l).trunc())),
            // Inside 2001:db8::/32, so that long prefixes and the dense part of the spelling rules get exercised.
            (any::<u64>(), 32u8..=128).prop_map(|(a, l)| {
                let addr = (0x2001_0db8u128 << 96) | u128::from(a) << (a % 64);
                IpNet::V6(Ipv6Net::new_assert(addr.into(), l).trunc())
            }),
        ]
    }

    /// Networks drawn from a small space, so that lists of a few dozen often nest and repeat.
    fn clustered_net() -> impl Strategy<Value = IpNet> {
        (any::<bool>(), any::<u8>(), 0u8..=8).prop_map(|(is_v4, bits, extra)| {
            if is_v4 {
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, bits, 0, 0), 8 + extra).trunc())
            } else {
                IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, u16::from(bits) << 8, 0, 0, 0, 0, 0), 32 + extra).trunc())
            }
        })
    }

    proptest! {
        #[test]
        fn valid_networks_round_trip(net in any_net()) {
            let text = net.to_string();
            match forbidden_overlap(&net) {
                None => prop_assert_eq!(parse_cidr(&text), Ok(net)),
                Some(_) => {
                    let refused = matches!(parse_cidr(&text), Err(CidrError::ForbiddenRange { .. }));
                    prop_assert!(refused, "{} should be a forbidden range", text);
                }
            }
        }

        #[test]
        fn accepted_text_is_canonical(text in "[0-9a-fA-F:./%]{0,44}") {
            if let Ok(net) = parse_cidr(&text) {
                prop_assert_eq!(net.to_string(), text);
            }
        }

        #[test]
        fn never_panics(text in ".{0,60}") {
            let _ = parse_cidr(&text);
        }

        #[test]
        fn overlaps_match_naive(nets in prop::collection::vec(clustered_net(), 0..40)) {
            prop_assert_eq!(overlaps_within(&nets), naive(&nets));
        }

        #[test]
        fn forest_parent_is_the_nearest_cover(nets in prop::collection::vec(clustered_net(), 0..40)) {
            let forest = containment_forest(&nets);
            for i in 0..nets.len() {
                prop_assert_eq!(forest.parent(i), naive_parent(&nets, i), "parent of {} in {:?}", i, nets);
            }
        }

        #[test]
        fn forest_parent_is_the_nearest_cover_in_long_lists(nets in prop::collection::vec(clustered_net(), 1_025..1_200)) {
            // Above the radix sort's small-list cut-over, so that its passes (and its ties) are exercised.
            let forest = containment_forest(&nets);
            for i in 0..nets.len() {
                prop_assert_eq!(forest.parent(i), naive_parent(&nets, i), "parent of {}", i);
            }
        }

        #[test]
        fn forest_of_any_networks(nets in prop::collection::vec(any_net(), 0..20)) {
            let forest = containment_forest(&nets);
            for i in 0..nets.len() {
                prop_assert_eq!(forest.parent(i), naive_parent(&nets, i), "parent of {} in {:?}", i, nets);
            }
            prop_assert_eq!(overlaps_within(&nets), naive(&nets));
        }
    }
}
