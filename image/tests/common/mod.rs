//! Shared fixture: a tiny rootfs tar and a small image assembled from it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use pibake_image::assemble::{assemble, AssembleSpec, ImageIds, ImageOutputs};
use pibake_image::table::{DiskId, Guid, TableSpec};
use pibake_image::{Content, Entry, EntryPath, Layer, Rootfs, SourceDateEpoch};

pub const EPOCH: u64 = 1_700_000_000;
pub const DISK_ID: u32 = 0x5eed_b00c;

pub fn p(s: &str) -> EntryPath {
    EntryPath::new(s).expect("valid path")
}

/// Fails (never skips) when a host tool is missing.
pub fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file());
    assert!(found, "{tool} not found: apt-get install {package}");
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub const CONFIG_TXT: &str = "# pibake test image\n\
arm_64bit=1\n\
kernel=vmlinuz-6.12\n\
initramfs initrd.img-6.12 followkernel\n\
enable_uart=1\n\
dtoverlay=gpio-shutdown,gpio_pin=3\n\
dtoverlay=disable-bt\n\
[pi4]\n\
device_tree=bcm2711-rpi-4-b.dtb\n";

pub fn cmdline(partuuid: &str) -> String {
    format!("console=tty1 root=PARTUUID={partuuid} rootfstype=ext4 rootwait\n")
}

/// Writes the base rootfs tar the way mmdebstrap would: "./" names, dirs, files, a symlink,
/// a hard link, a setuid binary, a file owned by a non-root user.
pub fn base_tar(path: &Path) {
    let f = std::fs::File::create(path).expect("create tar");
    let mut b = tar::Builder::new(f);
    let mut add =
        |name: &str, t: tar::EntryType, mode: u32, uid: u64, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(t);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(EPOCH + 99_999); // later than the epoch: must be clamped
            h.set_username("someone").expect("uname");
            h.set_size(data.len() as u64);
            match link {
                Some(l) => b.append_link(&mut h, name, l).expect("link"),
                None => b.append_data(&mut h, name, data).expect("append"),
            }
        };
    use tar::EntryType as T;
    add("./", T::Directory, 0o755, 0, b"", None);
    for d in [
        "./etc/",
        "./etc/ssh/",
        "./usr/",
        "./usr/bin/",
        "./home/",
        "./home/pi/",
        "./boot/",
        "./boot/firmware/",
        "./boot/firmware/overlays/",
        "./var/",
    ] {
        add(d, T::Directory, 0o755, 0, b"", None);
    }
    add(
        "./etc/machine-id",
        T::Regular,
        0o444,
        0,
        b"uninitialized\n",
        None,
    );
    add("./etc/hostname", T::Regular, 0o644, 0, b"base\n", None);
    add(
        "./etc/ssh/sshd_config",
        T::Regular,
        0o644,
        0,
        b"PermitRootLogin no\n",
        None,
    );
    add(
        "./usr/bin/tool",
        T::Regular,
        0o4755,
        0,
        &vec![0x7f; 70_000],
        None,
    );
    add(
        "./usr/bin/tool-alias",
        T::Link,
        0o4755,
        0,
        b"",
        Some("./usr/bin/tool"),
    );
    add("./usr/bin/sh", T::Symlink, 0o777, 0, b"", Some("dash"));
    add("./home/pi/notes", T::Regular, 0o600, 1000, b"hello\n", None);
    add("./var/obsolete", T::Regular, 0o644, 0, b"gone\n", None);
    add(
        "./boot/firmware/vmlinuz-6.12",
        T::Regular,
        0o644,
        0,
        &vec![0x4b; 300_000],
        None,
    );
    add(
        "./boot/firmware/initrd.img-6.12",
        T::Regular,
        0o644,
        0,
        &vec![0x1d; 100_000],
        None,
    );
    add(
        "./boot/firmware/bcm2711-rpi-4-b.dtb",
        T::Regular,
        0o644,
        0,
        b"\xd0\x0d\xfe\xedfake",
        None,
    );
    add(
        "./boot/firmware/overlays/gpio-shutdown.dtbo",
        T::Regular,
        0o644,
        0,
        b"\xd0\x0d\xfe\xedfake",
        None,
    );
    add(
        "./boot/firmware/overlays/disable-bt.dtbo",
        T::Regular,
        0o644,
        0,
        b"\xd0\x0d\xfe\xedfake",
        None,
    );
    b.into_inner().expect("finish tar");
}

pub fn ids(gpt: bool) -> ImageIds {
    let g = |b: u8| Guid::from_hash([b; 16]);
    ImageIds {
        table: if gpt {
            TableSpec::Gpt {
                disk: g(1),
                boot: g(2),
                root: g(3),
            }
        } else {
            TableSpec::Mbr {
                disk_id: DiskId(DISK_ID),
            }
        },
        fat_volume_id: 0x1234_abcd,
        fs_uuid: g(4),
        hash_seed: g(5),
    }
}

/// The layer pibake would add: configs, cmdline.txt, an owner-specific file, a whiteout.
pub fn layer(table: &TableSpec) -> Layer {
    Layer {
        name: "test".into(),
        entries: vec![
            Entry::file(p("etc/hostname"), Content::bytes("node1\n"), 0o644),
            Entry::file(
                p("etc/NetworkManager/system-connections/eth0.nmconnection"),
                Content::bytes("[ipv4]\nmethod=manual\n"),
                0o600,
            ),
            Entry::file(p("home/pi/.profile"), Content::bytes("export A=1\n"), 0o640)
                .owner(1000, 1000),
            Entry::delete(p("var/obsolete")),
            Entry::file(
                p("boot/firmware/config.txt"),
                Content::bytes(CONFIG_TXT),
                0o644,
            ),
            Entry::file(
                p("boot/firmware/cmdline.txt"),
                Content::bytes(cmdline(&table.root_partuuid())),
                0o644,
            ),
        ],
    }
}

/// Builds `<dir>/<name>.img` etc. from a fresh base tar.
pub fn build(dir: &Path, name: &str, gpt: bool) -> ImageOutputs {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let tarp = work.join("base.tar");
    base_tar(&tarp);
    let ids = ids(gpt);
    let mut rootfs = Rootfs::from_base_tar(&tarp, &work).expect("index base tar");
    rootfs.apply_layer(&layer(&ids.table));
    let mut spec = AssembleSpec::new(name, dir, &work, ids, SourceDateEpoch(EPOCH));
    spec.boot_size = 64 << 20;
    spec.root_min_free = 8 << 20;
    assemble(&mut rootfs, &spec).expect("assemble")
}

pub fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pibake-image-test.")
        .tempdir()
        .expect("tempdir")
}

pub fn file_sha256(p: &PathBuf) -> String {
    use sha2::Digest;
    let b = std::fs::read(p).expect("read");
    hex::encode(sha2::Sha256::digest(&b))
}
