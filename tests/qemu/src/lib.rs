//! QEMU harness for pibake's image-level tests.
//!
//! Boots the lab's arm64 role images under `qemu-system-aarch64 -M virt` with
//! the kernel and initrd read out of the image's own boot partition, and
//! x86-64 `pc-efi` images under `qemu-system-x86_64 -M q35` with OVMF, booting
//! through their own ESP (test-only kernel arguments by SMBIOS), on a qcow2
//! copy-on-write overlay (the built image is never written), inside a network
//! namespace made by the test. Assertions read the serial console, a
//! test-only probe channel, and the overlay's disk after power-off.
//!
//! - [`images`]: where the built images are, and a failure naming the build
//!   command when they are missing.
//! - [`disk`]: MBR and GPT partitions, FAT files (mtools) and ext4 files
//!   (debugfs) of a raw disk file; a GPT writer for test fixtures.
//! - [`overlay`]: the qcow2 overlay of one VM: boot-partition edits before
//!   boot, a raw snapshot after power-off.
//! - [`net`]: the network namespace, its bridge, taps, and a chronyd time
//!   server inside it.
//! - [`probe`]: the test-only unit passed through the kernel command line
//!   (never baked into an image) that reports state over a virtio port.
//! - [`pc`]: the x86-64 pc-efi machine: OVMF, the SMBIOS Type 11 string
//!   systemd-boot appends to the kernel command line, KVM or TCG.
//! - [`gps`]: an emulated GPS receiver, NMEA sentences for a chosen time
//!   into the GPS node's UART.
//! - [`http`]: GETs from the test's network, and what a series of them saw.
//! - [`qmp`]: QEMU's machine protocol, for the power button.
//! - [`vm`]: one QEMU process, its console, `wait_for`, the power button,
//!   power-off and kill.

pub mod disk;
pub mod gps;
pub mod http;
pub mod images;
pub mod net;
pub mod overlay;
pub mod pc;
pub mod probe;
pub mod qmp;
pub mod tool;
pub mod vm;

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong in the harness. Messages name the file or command.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("image {path} is missing: build the lab images first with `cargo xtask lab` (images dir from PIBAKE_IMAGES_DIR, default <workspace>/images)")]
    ImageMissing { path: PathBuf },
    #[error("`{tool}` is not installed: apt-get install {package}")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no usable MBR partition table: {why}")]
    Partitions { path: PathBuf, why: String },
    #[error("{what} not seen within {waited:?}{exited}; last console lines:\n{tail}")]
    Timeout {
        what: String,
        waited: Duration,
        exited: String,
        tail: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, HarnessError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let path = path.into();
    move |source| HarnessError::Io { path, source }
}
