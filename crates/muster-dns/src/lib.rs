//! muster-dns: the cluster DNS.
pub mod query;
pub mod wire;
pub mod zone;

pub use query::{ClientInfo, Outcome, answer};
pub use zone::{PodMode, Zone, ZoneBuilder, ZoneSettings};
