//! IPv4 CIDR arithmetic: parsing, the node's /24 out of the cluster pod CIDR, host addresses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("invalid CIDR {0:?}: expected a.b.c.d/len")]
    Syntax(String),
    #[error("invalid CIDR {0:?}: prefix length must be 0..=32")]
    Prefix(String),
    #[error("invalid CIDR {0:?}: host bits are set (did you mean {1}?)")]
    HostBits(String, String),
    #[error("pod CIDR {cluster} has no /{len} subnet number {index}")]
    NoSuchSubnet {
        cluster: String,
        len: u8,
        index: u32,
    },
}

impl Ipv4Cidr {
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        let text = format!("{network}/{prefix}");
        if prefix > 32 {
            return Err(CidrError::Prefix(text));
        }
        let masked = u32::from(network) & mask(prefix);
        if masked != u32::from(network) {
            let fixed = format!("{}/{prefix}", Ipv4Addr::from(masked));
            return Err(CidrError::HostBits(text, fixed));
        }
        Ok(Ipv4Cidr { network, prefix })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Number of addresses in the block (including network and broadcast).
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix as u32)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// The address at `offset` from the network address, if it is inside the block.
    pub fn nth(&self, offset: u64) -> Option<Ipv4Addr> {
        (offset < self.size()).then(|| Ipv4Addr::from(u32::from(self.network) + offset as u32))
    }

    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip)
            .then(|| (u32::from(ip) - u32::from(self.network)) as u64)
    }

    /// The first usable address: by convention the gateway (the node bridge).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        (self.size() >= 4).then(|| self.nth(1)).flatten()
    }

    /// Subnet number `index` of length `len` inside this block (e.g. the node's /24).
    pub fn subnet(&self, len: u8, index: u32) -> Result<Ipv4Cidr, CidrError> {
        let none = || CidrError::NoSuchSubnet {
            cluster: self.to_string(),
            len,
            index,
        };
        if len < self.prefix || len > 32 {
            return Err(none());
        }
        let count = 1u64 << (len - self.prefix) as u32;
        if index as u64 >= count {
            return Err(none());
        }
        let step = 1u64 << (32 - len as u32);
        let base = u32::from(self.network) as u64 + index as u64 * step;
        Ipv4Cidr::new(Ipv4Addr::from(base as u32), len)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (addr, len) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(text.to_string()))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| CidrError::Syntax(text.to_string()))?;
        let prefix: u8 = len
            .parse()
            .map_err(|_| CidrError::Syntax(text.to_string()))?;
        if prefix > 32 {
            return Err(CidrError::Prefix(text.to_string()));
        }
        Ipv4Cidr::new(network, prefix)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("10.244.0.0/16", Ok("10.244.0.0/16")),
            (" 10.96.0.0/12 ", Ok("10.96.0.0/12")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            (
                "10.244.0.1/16",
                Err("host bits are set (did you mean 10.244.0.0/16?)"),
            ),
            ("10.244.0.0/33", Err("prefix length must be 0..=32")),
            ("10.244.0.0", Err("expected a.b.c.d/len")),
            ("10.244.0/16", Err("expected a.b.c.d/len")),
            ("x/8", Err("expected a.b.c.d/len")),
        ];
        for (input, want) in cases {
            let got = input.parse::<Ipv4Cidr>();
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(g.to_string(), *w, "{input}"),
                (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{input}: {e}"),
                (w, g) => panic!("{input}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn subnets_and_offsets() {
        let cluster: Ipv4Cidr = "10.244.0.0/16".parse().unwrap();
        let check = |index: u32, want: &str| {
            assert_eq!(cluster.subnet(24, index).unwrap().to_string(), want)
        };
        check(0, "10.244.0.0/24");
        check(1, "10.244.1.0/24");
        check(255, "10.244.255.0/24");
        assert!(cluster.subnet(24, 256).is_err());
        assert!(cluster.subnet(8, 0).is_err());
        let node = cluster.subnet(24, 3).unwrap();
        assert_eq!(node.gateway(), Some(Ipv4Addr::new(10, 244, 3, 1)));
        assert_eq!(node.offset_of(Ipv4Addr::new(10, 244, 3, 9)), Some(9));
        assert_eq!(node.offset_of(Ipv4Addr::new(10, 244, 4, 9)), None);
        assert_eq!(node.nth(256), None);
        assert_eq!(node.size(), 256);
    }
}
