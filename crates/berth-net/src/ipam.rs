//! IPv4 CIDR blocks and the task-address allocator (IPAM) of one node's task subnet.
//!
//! Pure: no I/O. The agent owns an [`Ipam`], persists it with serde after every change and
//! re-adopts the addresses of tasks it finds running after a restart with [`Ipam::reserve`].
//!
//! Layout of a subnet `N/p` (p ≤ 30): `N` is the network address, `N+1` the gateway (the
//! bridge's address), `N+2 ..= broadcast-1` the task addresses, handed out lowest first.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 address with a prefix length, e.g. `10.213.7.1/24`.
///
/// The address need not be the network address: an interface address (`10.213.7.2/24`) is a
/// `Cidr` too. [`Cidr::network`] gives the block it lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("cidr {0:?} has no /prefix")]
    MissingPrefix(String),
    #[error("cidr {0:?} has an invalid IPv4 address")]
    BadAddress(String),
    #[error("cidr {0:?} has an invalid prefix length (0-32)")]
    BadPrefix(String),
}

impl Cidr {
    /// A CIDR from an address and a prefix length; `None` if `prefix > 32`.
    pub const fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        if prefix <= 32 {
            Some(Self { addr, prefix })
        } else {
            None
        }
    }

    /// The address as written (not necessarily the network address).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask_bits(&self) -> u32 {
        // `checked_shl` because a shift by 32 overflows: /0 has an all-zero mask.
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The netmask, e.g. `255.255.255.0` for /24.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }

    /// The network (first) address of the block.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask_bits())
    }

    /// The broadcast (last) address of the block.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask_bits())
    }

    /// The block itself: the network address with the same prefix.
    pub fn block(&self) -> Cidr {
        Cidr {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// Number of addresses in the block (2^(32-prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Number of host addresses: those strictly between the network and broadcast
    /// addresses. /31 and /32 have none here (RFC 3021 point-to-point links are not used).
    pub fn host_count(&self) -> u32 {
        u32::try_from(self.size().saturating_sub(2)).unwrap_or(u32::MAX)
    }

    /// Whether `ip` lies inside the block.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask_bits() == u32::from(self.network())
    }

    /// Whether the two blocks share an address (one contains the other's network address).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// The `n`th host address, counting from 1 (`network + n`), if `1 <= n <= host_count()`.
    pub fn nth_host(&self, n: u32) -> Option<Ipv4Addr> {
        (n >= 1 && n <= self.host_count()).then(|| Ipv4Addr::from(u32::from(self.network()) + n))
    }

    /// `ip` with this block's prefix, if `ip` lies inside the block.
    pub fn with_addr(&self, ip: Ipv4Addr) -> Option<Cidr> {
        self.contains(ip).then_some(Cidr {
            addr: ip,
            prefix: self.prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `a.b.c.d/p` strictly: dotted-quad without leading zeros (std's parser), a
    /// decimal prefix 0-32 without sign or leading zeros.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError::MissingPrefix(s.to_owned()))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(s.to_owned()))?;
        let bad_prefix = || CidrError::BadPrefix(s.to_owned());
        if prefix.is_empty()
            || prefix.len() > 2
            || !prefix.bytes().all(|b| b.is_ascii_digit())
            || (prefix.len() > 1 && prefix.starts_with('0'))
        {
            return Err(bad_prefix());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad_prefix())?;
        Cidr::new(addr, prefix).ok_or_else(bad_prefix)
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// The smallest usable task subnet: /30 holds the gateway and one task.
pub const MAX_SUBNET_PREFIX: u8 = 30;

/// Why an allocation, reservation or state load failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("subnet {subnet} is too small: a task subnet needs a prefix of at most /{MAX_SUBNET_PREFIX}")]
    SubnetTooSmall { subnet: Cidr },
    #[error("subnet {subnet} is full: all {capacity} task addresses are allocated")]
    SubnetFull { subnet: Cidr, capacity: u32 },
    #[error("address {ip} is outside subnet {subnet}")]
    OutsideSubnet { ip: Ipv4Addr, subnet: Cidr },
    #[error("address {ip} is the {role} of subnet {subnet} and never given to a task")]
    NotATaskAddress {
        ip: Ipv4Addr,
        subnet: Cidr,
        role: &'static str,
    },
    #[error("address {ip} is already allocated")]
    AlreadyAllocated { ip: Ipv4Addr },
}

/// The allocator of one task subnet: the gateway is the first host address, tasks get the
/// rest, lowest free first (deterministic, so a fresh node hands out `.2`, `.3`, ...).
///
/// Serialises as `{"subnet":"10.213.7.0/24","allocated":["10.213.7.2", ...]}`; loading
/// checks every address again, so a hand-edited or corrupt state cannot smuggle in the
/// gateway or a duplicate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "IpamState", into = "IpamState")]
pub struct Ipam {
    subnet: Cidr,
    allocated: BTreeSet<Ipv4Addr>,
}

/// The persisted form of [`Ipam`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IpamState {
    /// The task subnet (network address and prefix).
    subnet: Cidr,
    /// The task addresses in use, ascending.
    allocated: Vec<Ipv4Addr>,
}

impl TryFrom<IpamState> for Ipam {
    type Error = IpamError;
    fn try_from(state: IpamState) -> Result<Self, Self::Error> {
        let mut ipam = Ipam::new(state.subnet)?;
        for ip in state.allocated {
            ipam.reserve(ip)?;
        }
        Ok(ipam)
    }
}

impl From<Ipam> for IpamState {
    fn from(ipam: Ipam) -> Self {
        IpamState {
            subnet: ipam.subnet,
            allocated: ipam.allocated.into_iter().collect(),
        }
    }
}

impl Ipam {
    /// An empty allocator over `subnet` (any address inside the block may be given; it is
    /// normalised to the network address).
    pub fn new(subnet: Cidr) -> Result<Self, IpamError> {
        let subnet = subnet.block();
        if subnet.prefix() > MAX_SUBNET_PREFIX {
            return Err(IpamError::SubnetTooSmall { subnet });
        }
        Ok(Self {
            subnet,
            allocated: BTreeSet::new(),
        })
    }

    /// The task subnet, as a network address and prefix.
    pub fn subnet(&self) -> Cidr {
        self.subnet
    }

    /// The gateway (the bridge's address): the first host address, with the subnet prefix.
    pub fn gateway(&self) -> Cidr {
        let gw = Ipv4Addr::from(u32::from(self.subnet.network()) + 1);
        Cidr::new(gw, self.subnet.prefix()).expect("prefix already checked")
    }

    /// How many task addresses the subnet has in all (host addresses minus the gateway).
    pub fn capacity(&self) -> u32 {
        self.subnet.host_count() - 1
    }

    /// How many task addresses are still free.
    pub fn available(&self) -> u32 {
        self.capacity() - self.allocated.len() as u32
    }

    /// Whether `ip` is currently allocated to a task.
    pub fn is_allocated(&self, ip: Ipv4Addr) -> bool {
        self.allocated.contains(&ip)
    }

    /// The allocated task addresses, ascending.
    pub fn allocated(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.allocated.iter().copied()
    }

    fn first_task(&self) -> u32 {
        u32::from(self.subnet.network()) + 2
    }

    /// Hands out the lowest free task address, with the subnet prefix (ready for
    /// `ip addr add`).
    pub fn allocate(&mut self) -> Result<Cidr, IpamError> {
        // The set holds only valid task addresses, ascending: the first gap is the answer.
        let mut candidate = self.first_task();
        for ip in &self.allocated {
            if u32::from(*ip) == candidate {
                candidate += 1;
            } else {
                break;
            }
        }
        let ip = Ipv4Addr::from(candidate);
        if ip >= self.subnet.broadcast() {
            return Err(IpamError::SubnetFull {
                subnet: self.subnet,
                capacity: self.capacity(),
            });
        }
        self.allocated.insert(ip);
        Ok(self.with_prefix(ip))
    }

    /// Marks a specific address as allocated (re-adopting a running task after a restart).
    pub fn reserve(&mut self, ip: Ipv4Addr) -> Result<Cidr, IpamError> {
        self.check_task_address(ip)?;
        if !self.allocated.insert(ip) {
            return Err(IpamError::AlreadyAllocated { ip });
        }
        Ok(self.with_prefix(ip))
    }

    /// Returns an address to the pool. Idempotent: `false` if it was not allocated
    /// (including addresses outside the subnet, the gateway, network and broadcast).
    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        self.allocated.remove(&ip)
    }

    /// Whether `ip` may ever be handed to a task, and if not, why.
    pub fn check_task_address(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let subnet = self.subnet;
        let role = if !subnet.contains(ip) {
            return Err(IpamError::OutsideSubnet { ip, subnet });
        } else if ip == subnet.network() {
            "network address"
        } else if ip == self.gateway().addr() {
            "gateway"
        } else if ip == subnet.broadcast() {
            "broadcast address"
        } else {
            return Ok(());
        };
        Err(IpamError::NotATaskAddress { ip, subnet, role })
    }

    fn with_prefix(&self, ip: Ipv4Addr) -> Cidr {
        Cidr::new(ip, self.subnet.prefix()).expect("prefix already checked")
    }
}

#[cfg(test)]
mod tests;
