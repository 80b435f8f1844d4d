/// Why a model request was refused. Each names the field and the reason,
/// in words a user of `netd` or `docker` understands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{kind} {name:?} already exists")]
    Exists { kind: &'static str, name: String },
    #[error("no {kind} named {name:?}")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} still has endpoints: {endpoints}; remove them first")]
    InUse {
        kind: &'static str,
        name: String,
        endpoints: String,
    },
    #[error(
        "{what}: the {map} map of {host} holds at most {limit} entries and {have} are \
         already there; remove some first (nothing was written)"
    )]
    Full {
        what: &'static str,
        map: &'static str,
        host: String,
        limit: u32,
        have: usize,
    },
    #[error(
        "{what}: it would take {need} entries in the {map} map of {host}, which holds at \
         most {limit}; narrow its peers and ports or split the endpoints it selects \
         (nothing was written)"
    )]
    Overflows {
        what: String,
        map: &'static str,
        host: String,
        limit: u32,
        need: usize,
    },
    #[error(transparent)]
    Ipam(#[from] crate::ipam::IpamError),
}

impl ModelError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ModelError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
