//! Image writers of pibake: file trees and tar, FAT32 boot partition, ext4 root via mke2fs,
//! MBR/GPT tables, image assembly with bmap/zstd/sha256 outputs, image verification, the
//! project's device-tree overlays, and OCI image archives (`docker save`'s format, read and
//! written). No mounts, no loop devices; every id comes from the caller.

pub mod assemble;
/// Atomic writes live in pibake-host, shared by every host-side crate.
pub use pibake_host::atomic;
pub mod dtbo;
pub mod efi;
pub mod ext4;
pub mod fat;
pub mod initramfs;
pub mod manifest;
pub mod oci;
pub mod path;
pub mod pi5;
pub mod rootpart;
pub mod table;
pub mod tar;
pub mod tree;
pub mod verify;
pub mod window;

pub use path::EntryPath;
pub use tar::{Rootfs, SourceDateEpoch};
pub use tree::{Content, Entry, EntryKind, Layer, Tree};
