//! The table of host requirements: every external program pibake and its
//! tests spawn, and every package those programs need beside them, each with
//! the Debian package (or PyPI project) that brings it and what it is for.
//!
//! One table, two readers: `cargo xtask setup` installs every row, and
//! `pibake doctor` names the rows a host lacks with their install command.

/// Where a requirement is installed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The host's own Debian suite (bookworm).
    Debian,
    /// bookworm-backports on the host's Debian mirror (newer than bookworm).
    Backports,
    /// A PyPI project, installed with pip.
    Pypi,
}

/// Who needs a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// `pibake` itself: check, lock, fetch, build, verify, flash.
    Build,
    /// The aarch64 cross build of the first-boot agent (a checkout's `cargo xtask agent`).
    Agent,
    /// The test suite only (generated files judged by real daemons, the QEMU ring).
    Test,
}

impl Need {
    pub fn describe(self) -> &'static str {
        match self {
            Need::Build => "pibake",
            Need::Agent => "the agent's cross build",
            Need::Test => "the tests",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// The Debian package (with `:arch` for a foreign one) or PyPI project.
    pub package: &'static str,
    pub origin: Origin,
    /// The programs it brings that pibake or its tests run (may be empty:
    /// a library or keyring another program needs).
    pub programs: &'static [&'static str],
    /// The oldest version that works, where older ones exist and fail.
    pub min_version: Option<(u32, u32, u32)>,
    pub need: Need,
    /// Why pibake needs it, for `pibake doctor` and for readers.
    pub why: &'static str,
}

const fn row(
    package: &'static str,
    programs: &'static [&'static str],
    need: Need,
    why: &'static str,
) -> Requirement {
    Requirement {
        package,
        origin: Origin::Debian,
        programs,
        min_version: None,
        need,
        why,
    }
}

/// Programs the README's prerequisites bring (a Rust toolchain), not a package.
pub const PREREQUISITES: &[&str] = &["cargo"];

/// Every requirement, in install order.
pub const TABLE: &[Requirement] = &[
    // Always present on Debian (Essential or priority required), listed so
    // that every spawned program has its row.
    row(
        "dpkg",
        &["dpkg", "dpkg-deb", "dpkg-query"],
        Need::Build,
        "reads .deb members and the host's package state",
    ),
    row(
        "apt",
        &["apt-get", "apt-cache"],
        Need::Build,
        "`pibake lock` resolves packages with the host's apt in a private directory",
    ),
    // What compiling pibake needs beyond gcc: openssl-sys links the system's
    // OpenSSL (the cache client's TLS) and finds it with pkg-config.
    row(
        "libssl-dev",
        &[],
        Need::Build,
        "compiling pibake: the cache client's TLS links Debian's OpenSSL",
    ),
    row(
        "pkg-config",
        &["pkg-config"],
        Need::Build,
        "compiling pibake: finds OpenSSL for openssl-sys",
    ),
    row(
        "coreutils",
        &["cp", "rm", "id", "sha256sum", "true", "sleep", "cat", "chroot"],
        Need::Build,
        "basic file and process tools",
    ),
    row(
        "mount",
        &["mount", "umount", "losetup"],
        Need::Test,
        "the fresh-root CI step and the flash tests' refusal cases",
    ),
    row(
        "util-linux",
        &["unshare"],
        Need::Test,
        "the fresh-root CI step runs setup in its own mount namespace",
    ),
    row(
        "dash",
        &["sh"],
        Need::Build,
        "the shell of the scripts mmdebstrap and apt run",
    ),
    row(
        "procps",
        &["kill"],
        Need::Test,
        "the tests signal the processes they start (a SIGKILLed fetch, the ring's QEMUs)",
    ),
    row(
        "bash",
        &["bash"],
        Need::Test,
        "runs the fresh-root CI step's script",
    ),
    row(
        "git",
        &["git"],
        Need::Test,
        "the fresh-root CI step clones the repository",
    ),
    // pibake itself.
    row(
        "mmdebstrap",
        &["mmdebstrap"],
        Need::Build,
        "the rootfs stage installs the locked packages into a tar",
    ),
    row(
        "arch-test",
        &["arch-test"],
        Need::Build,
        "mmdebstrap refuses a foreign architecture without it (only a Recommends)",
    ),
    row(
        "qemu-user-static",
        &["qemu-aarch64-static"],
        Need::Build,
        "runs arm64 maintainer scripts through binfmt_misc",
    ),
    row(
        "binfmt-support",
        &[],
        Need::Build,
        "keeps the qemu-user binfmt entries registered across reboots",
    ),
    Requirement {
        package: "e2fsprogs",
        origin: Origin::Backports,
        programs: &["mke2fs", "mkfs.ext4", "e2fsck", "debugfs"],
        min_version: Some((1, 47, 1)),
        need: Need::Build,
        why: "`mke2fs -d file.tar` writes the ext4 root without mounts (1.47.1 or newer)",
    },
    row(
        "libarchive13",
        &[],
        Need::Build,
        "mke2fs reads the root tar through libarchive at run time",
    ),
    row(
        "device-tree-compiler",
        &["dtc", "fdtoverlay", "fdtget", "fdtput"],
        Need::Build,
        "compiles pibake's device-tree overlays; the tests apply them",
    ),
    row(
        "tar",
        &["tar"],
        Need::Test,
        "the OVMF test unpacks systemd-boot and a kernel from their .debs",
    ),
    row(
        "dosfstools",
        &["fsck.vfat", "mkfs.vfat"],
        Need::Build,
        "`pibake verify` checks the boot partition",
    ),
    row(
        "fdisk",
        &["sfdisk"],
        Need::Test,
        "the tests read partition tables with the real tool",
    ),
    row(
        "gpgv",
        &["gpgv"],
        Need::Build,
        "apt checks the signatures of the archive indices",
    ),
    row(
        "debian-archive-keyring",
        &[],
        Need::Build,
        "the keys apt checks Debian's indices against",
    ),
    row(
        "zstd",
        &["zstd"],
        Need::Test,
        "the tests decompress .img.zst with the reference tool",
    ),
    row(
        "bmap-tools",
        &["bmaptool"],
        Need::Test,
        "the tests write images with bmaptool to compare with `pibake flash`",
    ),
    row(
        "mtools",
        &["mcopy", "mdir", "mtype", "mlabel", "mdel", "mformat", "mmd"],
        Need::Test,
        "the tests read, write and make FAT partitions without mounts (flash, the ring's ESP fixture)",
    ),
    row(
        "skopeo",
        &["skopeo"],
        Need::Test,
        "the tests read the lab's web image archive as docker-archive and oci-archive",
    ),
    row(
        "docker-registry",
        &["docker-registry"],
        Need::Test,
        "the cache tests push to and pull from a real OCI registry (the CNCF distribution registry) on loopback",
    ),
    row(
        "dpkg-dev",
        &["dpkg-scanpackages"],
        Need::Test,
        "the tests index repositories with Debian's own tool",
    ),
    row(
        "apt-utils",
        &[],
        Need::Test,
        "apt's helpers for the lock tests' local repositories",
    ),
    // The agent's cross build.
    row(
        "rustc-web",
        &["rustc"],
        Need::Agent,
        "Debian's rustc has an aarch64 standard library as a package (rustup's targets are out of reach)",
    ),
    row(
        "libstd-rust-web-dev:arm64",
        &[],
        Need::Agent,
        "the aarch64 standard library for Debian's rustc",
    ),
    row(
        "gcc-aarch64-linux-gnu",
        &["aarch64-linux-gnu-gcc"],
        Need::Agent,
        "links the aarch64 agent",
    ),
    row(
        "libc6-dev-arm64-cross",
        &[],
        Need::Agent,
        "the aarch64 C library the agent links against",
    ),
    // Real tools that judge generated files, and the QEMU ring.
    row(
        "keepalived",
        &["keepalived"],
        Need::Test,
        "`keepalived -t` judges the rendered configuration",
    ),
    row(
        "chrony",
        &["chronyd"],
        Need::Test,
        "`chronyd -p` judges the rendered configuration; the ring's time server",
    ),
    row(
        "curl",
        &["curl"],
        Need::Test,
        "the ring's HTTP GETs of the lab's web page through the VIP; the fetch benchmark's reference downloader",
    ),
    row(
        "systemd",
        &["systemd-analyze"],
        Need::Test,
        "`systemd-analyze verify` judges the agent's units",
    ),
    Requirement {
        package: "qemu-system-arm",
        origin: Origin::Backports,
        programs: &["qemu-system-aarch64"],
        min_version: None,
        need: Need::Test,
        why: "the QEMU ring boots the lab's images (QEMU 10 from backports)",
    },
    Requirement {
        package: "qemu-system-x86",
        origin: Origin::Backports,
        programs: &["qemu-system-x86_64"],
        min_version: None,
        need: Need::Test,
        why: "the QEMU ring boots the lab's pc-efi masters under OVMF (QEMU 10 from backports)",
    },
    row(
        "ovmf",
        &[],
        Need::Test,
        "UEFI firmware of the ring's pc-efi VMs (/usr/share/OVMF/OVMF_CODE_4M.fd)",
    ),
    row(
        "qemu-utils",
        &["qemu-img", "qemu-io"],
        Need::Build,
        "the .qcow2 of pc-efi images (qemu-img convert); the ring's copy-on-write overlays",
    ),
    row(
        "iproute2",
        &["ip", "ss"],
        Need::Test,
        "the ring's network namespace, bridge and taps",
    ),
    row(
        "iputils-ping",
        &["ping"],
        Need::Test,
        "the ring checks the VIP answers",
    ),
    row(
        "python3",
        &["python3"],
        Need::Test,
        "runs pip for the PyPI tools (check-jsonschema, spdx-tools)",
    ),
    row(
        "python3-venv",
        &[],
        Need::Test,
        "a private virtual environment for the PyPI tools (Debian's python refuses global pip installs)",
    ),
    Requirement {
        package: "check-jsonschema",
        origin: Origin::Pypi,
        programs: &["check-jsonschema"],
        min_version: None,
        need: Need::Test,
        why: "validates the release workflow against GitHub's schema",
    },
    Requirement {
        package: "spdx-tools",
        origin: Origin::Pypi,
        programs: &["pyspdxtools"],
        min_version: None,
        need: Need::Test,
        why: "validates the SPDX SBOMs a build writes beside its images",
    },
];

/// The row that brings `program`, if any.
pub fn providing(program: &str) -> Option<&'static Requirement> {
    TABLE.iter().find(|r| r.programs.contains(&program))
}

/// The Debian packages of `origin` needed for `needs`, in table order.
pub fn packages(origin: Origin, needs: &[Need]) -> Vec<&'static str> {
    TABLE
        .iter()
        .filter(|r| r.origin == origin && needs.contains(&r.need))
        .map(|r| r.package)
        .collect()
}

impl Requirement {
    /// The command that installs this requirement on Debian 12.
    pub fn install_command(&self) -> String {
        match self.origin {
            Origin::Debian => format!("apt-get install --no-install-recommends {}", self.package),
            Origin::Backports => format!(
                "apt-get install --no-install-recommends -t bookworm-backports {} \
                 (add bookworm-backports to the apt sources first: `cargo xtask setup` does)",
                self.package
            ),
            Origin::Pypi => format!("pip install {}", self.package),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_has_one_row() {
        let mut seen = std::collections::BTreeMap::new();
        for row in TABLE {
            for program in row.programs {
                if let Some(other) = seen.insert(*program, row.package) {
                    panic!("{program} is in both {other} and {}", row.package);
                }
            }
        }
        assert_eq!(
            providing("mmdebstrap").map(|r| r.package),
            Some("mmdebstrap")
        );
        assert_eq!(providing("no-such-program"), None);
    }

    #[test]
    fn every_package_once() {
        let mut names: Vec<&str> = TABLE.iter().map(|r| r.package).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a package has two rows");
    }
}
