//! pibake's flashing, image diff and release helpers.
//!
//! - [`flash::flash`]: image (`.img` / `.img.zst`) to a card or file, bmap-aware, read back and
//!   verified, then `pibake-node.toml` / `pibake-secrets.toml` on the FAT boot partition; a
//!   node the image's node table does not serve is refused first ([`nodes`]).
//! - [`diff::diff`]: what changed between two images or manifests (packages, files, boot
//!   config lines), with a stable text rendering.
//! - [`release`]: rpi-imager repository JSON (`os_list`) and `SHA256SUMS`.

pub mod bmap;
pub mod boot;
pub mod diff;
pub mod flash;
pub mod nodes;
pub mod release;
pub mod source;
pub mod target;

pub use boot::NodeName;
pub use flash::{flash, BmapChoice, FlashError, FlashOptions, FlashReport, Verification};
