//! Session affinity: `none`, `client-ip` or `client-ip:TIMEOUT`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::Mode;
use crate::model::ModelError;

/// Session affinity: whether a client's new flows go to the backend its
/// last one had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", rename_all_fields = "kebab-case")]
pub enum Affinity {
    #[default]
    None,
    /// For `timeout_secs` after the client's last new flow, while that
    /// backend takes new flows.
    ClientIp { timeout_secs: u32 },
}

impl Affinity {
    /// Kubernetes' default for `sessionAffinity: ClientIP`.
    pub const DEFAULT_TIMEOUT_SECS: u32 = 10_800;
    /// Kubernetes' limit, and the longest a client keeps a backend.
    pub const MAX_TIMEOUT_SECS: u32 = 86_400;
}

impl fmt::Display for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Affinity::None => f.write_str("none"),
            Affinity::ClientIp { timeout_secs } => write!(f, "client-ip:{timeout_secs}s"),
        }
    }
}

/// `none`, `client-ip` or `client-ip:TIMEOUT` (seconds, or with an `s`,
/// `m` or `h` suffix).
impl FromStr for Affinity {
    type Err = ModelError;

    fn from_str(text: &str) -> Result<Self, ModelError> {
        let bad = |why: String| {
            ModelError::invalid(
                "affinity",
                format!("{text:?} {why} (none, client-ip or client-ip:TIMEOUT, e.g. client-ip:3h)"),
            )
        };
        let (mode, timeout) = match text.split_once(':') {
            Some((mode, timeout)) => (mode, Some(timeout)),
            None => (text, None),
        };
        match (mode, timeout) {
            ("none", None) => return Ok(Affinity::None),
            ("client-ip", _) => {}
            _ => return Err(bad("is not an affinity".into())),
        }
        let Some(timeout) = timeout else {
            return Ok(Affinity::ClientIp {
                timeout_secs: Self::DEFAULT_TIMEOUT_SECS,
            });
        };
        let (digits, unit) = match timeout.strip_suffix(['s', 'm', 'h']) {
            Some(d) => (d, &timeout[d.len()..]),
            None => (timeout, "s"),
        };
        let scale = match unit {
            "h" => 3600,
            "m" => 60,
            _ => 1,
        };
        let secs = digits
            .parse::<u32>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .filter(|n| (1..=Self::MAX_TIMEOUT_SECS).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "has a timeout that is not 1 s to {} s",
                    Self::MAX_TIMEOUT_SECS
                ))
            })?;
        Ok(Affinity::ClientIp { timeout_secs: secs })
    }
}

pub(super) fn parse_affinity(text: Option<&str>, mode: Mode) -> Result<Affinity, ModelError> {
    let affinity = text.map(str::parse).transpose()?.unwrap_or_default();
    if mode == Mode::Dnsrr && affinity != Affinity::None {
        return Err(ModelError::invalid(
            "affinity",
            "a dnsrr service has no VIP to keep a client on one backend",
        ));
    }
    Ok(affinity)
}
