//! The first-boot agent of pibake images.
//!
//! The library holds the node-table format (written by the builder with these
//! very types, read by the agent on the board) and the agent's steps.

pub mod table;
