//! What pibake needs from its host, in one place: the programs it runs and
//! the small file-system helpers every host-side crate shares.
//!
//! [`atomic`] is the one implementation of crash-safe writes on the host
//! (temp file, fsync, rename, fsync of the directory; stale temp files of
//! killed writers found by their lock). The agent keeps its own std-only copy
//! (firstboot/src/atomic.rs): it runs on the board, is cross-built with
//! Debian's rustc and adds no dependency.
//!
//! [`tools`] is the table of every external program pibake and its tests run,
//! with the Debian package that brings it. `cargo xtask setup` installs from
//! it and `pibake doctor` ([`doctor`]) reads it to say what is missing, so
//! setup cannot drift from use. A test (tests/spawned.rs) scans the workspace
//! for spawned programs and fails on one the table does not name.

pub mod atomic;
pub mod civil;
pub mod doctor;
pub mod scratch;
pub mod tools;
