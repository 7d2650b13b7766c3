//! What pibake needs from its host, in one place.
//!
//! [`tools`] is the table of every external program pibake and its tests run,
//! with the Debian package that brings it. `cargo xtask setup` installs from
//! it and `pibake doctor` ([`doctor`]) reads it to say what is missing, so
//! setup cannot drift from use. A test (tests/spawned.rs) scans the workspace
//! for spawned programs and fails on one the table does not name.

pub mod doctor;
pub mod tools;
