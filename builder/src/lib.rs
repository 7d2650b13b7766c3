//! pibake: reproducible Raspberry Pi cluster images from one declarative
//! description. See ARCHITECTURE.md for the map.

pub mod boot;
pub mod build;
pub mod cache;
pub mod data;
pub mod diag;
pub mod hash;
pub mod inputs;
pub mod model;
pub mod picture;
pub mod plan;
pub mod preload;
pub mod rebuild;
pub mod render;
pub mod rootfs;
pub mod spec;
