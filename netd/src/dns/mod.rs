//! Service discovery: netd answers DNS for its networks from the model the
//! datapath applied. `NAME` is a service's VIP (its backends when it has
//! none), `tasks.NAME` its backends, an endpoint's or container's name its
//! address, each only to askers on that network; everything else goes to
//! the upstream resolvers. Served on each network's gateway address.

pub mod answer;
pub mod names;
pub mod server;
pub mod upstream;

pub use names::Names;
