//! Nix-style inputs of pibake: lockfile, content-addressed store, fetch, local apt repository.
//!
//! - [`sources`]: apt sources (the host's default mirror, profile-added ones).
//! - [`resolve`]: the host's apt in a private directory computes a [`lock::Lock`].
//! - [`store`]: `<store>/<sha256>-<name>`, atomic inserts, verify, gc, roots.
//! - [`fetch`]: downloads what a lock needs into the store, verified, in parallel.
//! - [`repo`]: a flat apt repository view of the locked .debs for the rootfs stage.

pub mod control;
pub mod deb;
pub mod digest;
pub mod fetch;
pub mod lock;
pub mod release;
pub mod repo;
pub mod resolve;
pub mod sources;
pub mod store;
pub mod substitute;

pub use digest::Sha256;
pub use lock::{Closure, Lock, LockedPackage};
pub use resolve::LockRequest;
pub use sources::Source;
pub use store::{EntryName, Store};
pub use substitute::{StageOutput, SubstituteError, Substituter};
