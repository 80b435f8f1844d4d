use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

/// An Ethernet address, shown and parsed as `02:6e:0a:01:00:02`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The address netd gives an endpoint: locally administered, unicast,
    /// `02:6e` then the IPv4 address, so it is unique wherever the IP is.
    pub fn for_ipv4(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        Mac([0x02, 0x6e, o[0], o[1], o[2], o[3]])
    }

    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (six hex bytes separated by ':')"
            ));
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            *byte = u8::from_str_radix(part, 16)
                .ok()
                .filter(|_| part.len() == 2)
                .ok_or_else(|| format!("{s:?} is not a MAC address"))?;
        }
        Ok(Mac(mac))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_from_ipv4_and_round_trips() {
        let mac = Mac::for_ipv4(Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(mac.to_string(), "02:6e:0a:01:00:02");
        assert_eq!("02:6e:0a:01:00:02".parse::<Mac>(), Ok(mac));
        assert!(mac.is_unicast());
    }

    #[test]
    fn bad_text_is_refused() {
        for bad in [
            "",
            "02:6e:0a:01:00",
            "02:6e:0a:01:00:zz",
            "2:6e:0a:01:00:02",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        assert!(!"01:00:5e:00:00:01"
            .parse::<Mac>()
            .expect("mac")
            .is_unicast());
    }
}
