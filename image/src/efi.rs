//! The EFI system partition of a `pc-efi` image (x86-64, UEFI): systemd-boot from Debian's
//! `systemd-boot-efi` at the removable path and at its own, one Boot Loader Specification
//! entry, the kernel and initrd beside them. One definition, used by the builder that writes
//! these files and by `verify` that reads them.
//!
//! Why the removable path: Apple's firmware on the Mac Mini honours NVRAM boot entries
//! unreliably, and a fresh Proxmox OVMF disk has none; both fall back to
//! `\EFI\BOOT\BOOTX64.EFI` (FACTS.md, "Mac Mini masters"). No `bootctl install` runs: it
//! needs a mounted ESP and writes NVRAM, neither of which an image build has.

use std::fmt::Write as _;

/// Where the ESP's files sit in the root tree (Debian's mount point of the ESP).
pub const ESP_DIR: &str = "boot/efi";
/// [`ESP_DIR`] as a tree path.
pub fn esp_dir() -> crate::EntryPath {
    crate::EntryPath::trusted(ESP_DIR)
}

/// The removable-media loader path every UEFI firmware tries.
pub const REMOVABLE_LOADER: &str = "EFI/BOOT/BOOTX64.EFI";
/// systemd-boot's own path on the ESP (what `bootctl install` would write).
pub const SYSTEMD_BOOT: &str = "EFI/systemd/systemd-bootx64.efi";
/// The systemd-boot binary in the root tree (package `systemd-boot-efi`).
pub const SYSTEMD_BOOT_SOURCE: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
pub const LOADER_CONF: &str = "loader/loader.conf";
pub const ENTRIES_DIR: &str = "loader/entries";
/// The one entry pibake writes.
pub const ENTRY_ID: &str = "pibake";

/// The ESP path of the entry file.
pub fn entry_path() -> String {
    format!("{ENTRIES_DIR}/{ENTRY_ID}.conf")
}

/// `loader/loader.conf`: boot the entry at once (a key shows the menu), and no editing of the
/// kernel command line at the console (`init=/bin/sh` would be a root shell).
pub fn loader_conf() -> String {
    format!("# Written by pibake.\ndefault {ENTRY_ID}.conf\ntimeout 0\neditor no\n")
}

/// A Boot Loader Specification type #1 entry, as systemd-boot reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderEntry {
    pub title: String,
    /// ESP path of the kernel, with its leading `/`.
    pub linux: String,
    /// ESP paths of the initrds.
    pub initrd: Vec<String>,
    /// The kernel command line.
    pub options: String,
}

impl LoaderEntry {
    /// The entry's text (keys as the specification names them).
    pub fn render(&self) -> String {
        let mut out = format!(
            "# Written by pibake.\ntitle {}\nlinux {}\n",
            self.title, self.linux
        );
        for initrd in &self.initrd {
            let _ = writeln!(out, "initrd {initrd}");
        }
        let _ = writeln!(out, "options {}", self.options);
        out
    }

    /// Reads an entry; `Err` names the line and what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (mut title, mut linux, mut initrd, mut options) = (None, None, Vec::new(), Vec::new());
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(char::is_whitespace)
                .map(|(k, v)| (k, v.trim()))
                .unwrap_or((line, ""));
            match key {
                "title" => title = Some(value.to_owned()),
                "linux" => linux = Some(value.to_owned()),
                "initrd" => initrd.push(value.to_owned()),
                // Several `options` lines are joined with spaces (the specification).
                "options" => options.push(value.to_owned()),
                "version" | "machine-id" | "sort-key" | "devicetree" | "architecture" | "efi" => {}
                other => return Err(format!("line {}: unknown key {other:?}", i + 1)),
            }
        }
        Ok(Self {
            title: title.unwrap_or_default(),
            linux: linux.ok_or("no `linux` line")?,
            initrd,
            options: options.join(" "),
        })
    }

    /// The value of `root=` in the options.
    pub fn root(&self) -> Option<&str> {
        self.options
            .split_whitespace()
            .find_map(|w| w.strip_prefix("root="))
    }
}

/// The `default` of a loader.conf, if it names one.
pub fn default_entry(loader_conf: &str) -> Option<&str> {
    loader_conf.lines().find_map(|l| {
        let l = l.trim();
        l.strip_prefix("default")
            .filter(|rest| rest.starts_with(char::is_whitespace))
            .map(str::trim)
    })
}

/// Whether `bytes` are a PE/COFF image for x86-64 (what a UEFI firmware on a Mac Mini or OVMF
/// runs): the `MZ` stub, the `PE\0\0` signature where `e_lfanew` points, machine 0x8664.
pub fn is_pe_x86_64(bytes: &[u8]) -> bool {
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(o..o + 4)?.try_into().ok()?))
    };
    let Some(pe) = u32_at(0x3c).map(|v| v as usize) else {
        return false;
    };
    bytes.starts_with(b"MZ")
        && bytes.get(pe..pe + 4) == Some(b"PE\0\0")
        && bytes.get(pe + 4..pe + 6) == Some(&0x8664u16.to_le_bytes()[..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry() -> LoaderEntry {
        LoaderEntry {
            title: "Debian (lab-master)".into(),
            linux: "/vmlinuz-7.3.4+deb13-amd64".into(),
            initrd: vec!["/initrd.img-7.3.4+deb13-amd64".into()],
            options: "root=PARTUUID=0fc63daf-0000-4000-8000-000000000002 rootfstype=ext4 rw".into(),
        }
    }

    #[test]
    fn an_entry_round_trips_and_names_its_root() {
        let e = entry();
        let text = e.render();
        assert_eq!(LoaderEntry::parse(&text), Ok(e.clone()));
        assert_eq!(
            e.root(),
            Some("PARTUUID=0fc63daf-0000-4000-8000-000000000002")
        );
        assert_eq!(default_entry(&loader_conf()), Some("pibake.conf"));
        assert_eq!(default_entry("defaultx y\n"), None);
    }

    #[test]
    fn bad_entries_are_refused_with_their_line() {
        assert_eq!(
            LoaderEntry::parse("title x\n"),
            Err("no `linux` line".to_owned())
        );
        let err = LoaderEntry::parse("title x\nlinux /k\nkernel /k\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("kernel"), "{err}");
        let two = LoaderEntry::parse("linux /k\noptions a\noptions b\n").unwrap();
        assert_eq!(two.options, "a b");
    }

    #[test]
    fn only_an_x86_64_pe_is_a_loader() {
        let mut pe = vec![0u8; 0x100];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        assert!(is_pe_x86_64(&pe));
        let mut arm = pe.clone();
        arm[0x84..0x86].copy_from_slice(&0xaa64u16.to_le_bytes());
        assert!(!is_pe_x86_64(&arm), "an AArch64 PE");
        assert!(!is_pe_x86_64(b"not a kernel\n"));
        let mut short = pe.clone();
        short[0x3c..0x40].copy_from_slice(&0xfff0u32.to_le_bytes());
        assert!(!is_pe_x86_64(&short), "e_lfanew past the end");
    }
}
